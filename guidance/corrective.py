"""The learned manifold corrective k_psi(x, t) ~ E_eps[x_hat | x, t]: a shallow timestep-conditioned conv net.

Residual form k_psi(x, t) = x + f_psi(x, t) with f's last layer zero-initialised, so an untrained corrective is the
identity (and LMC-SDS with c_t = alpha_t / sigma_t then equals SDS exactly). It lives in the prior's input space x
(pixels for pixel priors, latents for Stable Diffusion). Saved as safetensors + a JSON card naming its prior;
loading one made for another prior is refused.
"""
from __future__ import annotations

import json
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
    from safetensors.torch import save_file

    from dreamlmc.io import atomic_write, atomic_write_text

    path = Path(path)
    tensors = {k: v.detach().float().contiguous() for k, v in net.state_dict().items()}
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    atomic_write_text(path.with_suffix(".json"), json.dumps(dict(card, config=net.config), indent=2))


def load_corrective(path: Path, expect_model_id: Optional[str] = None, device="cpu") -> Tuple[Corrective, Dict]:
    from safetensors.torch import load_file

    path = Path(path)
    card_path = path.with_suffix(".json")
    if not path.exists():
        raise DreamlmcError(f"corrective k_psi not found: {path}; train one with 'dreamlmc corrective train'")
    if not card_path.exists():
        raise DreamlmcError(f"corrective {path} has no card {card_path.name}; it cannot be matched to a prior")
    card = json.loads(card_path.read_text())
    if expect_model_id is not None and card.get("model_id") != expect_model_id:
        raise DreamlmcError(f"corrective {path} was trained for prior {card.get('model_id')!r}, not "
                            f"{expect_model_id!r}; train a matching one with 'dreamlmc corrective train'")
    net = Corrective(**card["config"])
    try:
        net.load_state_dict(load_file(str(path)))
    except Exception as e:  # a corrupt or mismatched file is a user-fixable problem
        raise DreamlmcError(f"corrective {path} could not be loaded ({type(e).__name__}); retrain it")
    return net.to(device).eval().requires_grad_(False), card
