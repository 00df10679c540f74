"""The learned manifold corrective k_psi(x, t) ~ E_eps[x_hat | x, t]: a shallow timestep-conditioned conv net.

Residual form k_psi(x, t) = x + f_psi(x, t) with f's last layer zero-initialised, so an untrained corrective is the
identity (and LMC-SDS with c_t = alpha_t / sigma_t then equals SDS exactly). It lives in the prior's input space x
(pixels for pixel priors, latents for Stable Diffusion). Saved as safetensors + a JSON card naming its prior;
loading one made for another prior is refused.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from dreamlmc.errors import DreamlmcError


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t (B,) in [0, 1] -> (B, dim) sinusoidal features."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    ang = t.float()[:, None] * 1000.0 * freqs[None]
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)


class Corrective(nn.Module):
    """x (B, C, h, w), t (B,) normalised to [0, 1] -> k_psi(x, t) (B, C, h, w)."""

    def __init__(self, channels: int = 3, hidden: int = 48, layers: int = 4, kernel: int = 5, t_dim: int = 32):
        super().__init__()
        self.config = {"channels": channels, "hidden": hidden, "layers": layers, "kernel": kernel, "t_dim": t_dim}
        pad = kernel // 2
        self.t_dim = t_dim
        self.inp = nn.Conv2d(channels, hidden, kernel, padding=pad)
        self.mid = nn.ModuleList([nn.Conv2d(hidden, hidden, kernel, padding=pad) for _ in range(layers - 2)])
        self.film = nn.Linear(t_dim, 2 * hidden * (layers - 1))
        self.out = nn.Conv2d(hidden, channels, kernel, padding=pad)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        film = self.film(timestep_embedding(t, self.t_dim).to(x.dtype)).chunk(2 * (len(self.mid) + 1), dim=-1)
        h = self.inp(x)
        for i, conv in enumerate([None] + list(self.mid)):
            if conv is not None:
                h = conv(h)
            scale, shift = film[2 * i], film[2 * i + 1]
            h = F.silu(h * (1 + scale[:, :, None, None]) + shift[:, :, None, None])
        return x + self.out(h)


def save_corrective(net: Corrective, path: Path, card: Dict) -> None:
    from dreamlmc.netio import save_network

    save_network(net.float(), path, dict(card, config=net.config, kind="dreamlmc-corrective"))


def load_corrective(path: Path, expect_model_id: Optional[str] = None, device="cpu") -> Tuple[Corrective, Dict]:
    from dreamlmc.netio import load_network

    net, card = load_network(path, lambda card: Corrective(**card["config"]), "corrective k_psi",
                             "train one with 'dreamlmc corrective train'", device=device)
    if expect_model_id is not None and card.get("model_id") != expect_model_id:
        raise DreamlmcError(f"corrective {path} was trained for prior {card.get('model_id')!r}, not "
                            f"{expect_model_id!r}; train a matching one with 'dreamlmc corrective train'")
    return net, card
