"""LMC-SDS's corrective term (a reconstruction of arXiv 2401.05293; see shared method notes).

SDS's gradient splits as  ε̂ − ε = (s − 1)(ε_c − ε_u)  +  (ε_c − ε),  the second ("projection") term being exactly
(α_t/σ_t)(x − x̂): a pull towards the one-step denoised x̂, which is blurred by the denoiser. LMC-SDS keeps the
first term and replaces the second by comparing like with like, the image's own expected corruption k_psi(x, t)
with x̂:

    L_lmc = ½ λ w(t) c_t ‖k_psi(x, t) − sg(x̂)‖²,   ∂L_lmc/∂x = λ w(t) c_t J_kpsiᵀ (k_psi(x, t) − x̂)   ("jacobian")
    or the plain residual λ w(t) c_t (k_psi(x, t) − x̂) applied to x                               ("residual")
"""
from __future__ import annotations

from typing import Callable

import torch


def lmc_loss(x: torch.Tensor, x_hat: torch.Tensor, t_norm: torch.Tensor, corrective: Callable,
             scale: torch.Tensor, gradient: str = "jacobian") -> torch.Tensor:
    """Reparameterised loss whose gradient w.r.t. x is the LMC term.

    x: (B, C, h, w) with grad; x_hat: (B, C, h, w) (no grad); t_norm: (B,) t / T; scale: (B,) = λ w(t) c_t.
    Summed over the batch (callers divide by B like the SDS term).
    """
    s = scale.view(-1, 1, 1, 1)
    if gradient == "jacobian":
        residual = corrective(x, t_norm) - x_hat.detach()
        return 0.5 * (s * residual ** 2).sum()
    if gradient == "residual":
        with torch.no_grad():
            g = s * (corrective(x, t_norm) - x_hat)
        return 0.5 * ((x - (x - g).detach()) ** 2).sum()
    raise ValueError(f"unknown LMC gradient {gradient!r}")
