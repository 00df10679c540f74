"""The diffusion maths every part of dreamlmc shares, in one place: noising, the one-step denoised estimate, and
DDIM sampling through the diffusers scheduler a backend keeps (DreamFusion's notation: α_t = sqrt(ᾱ_t),
σ_t = sqrt(1 − ᾱ_t), x_t = α_t x + σ_t ε, x̂ = (x_t − σ_t ε̂) / α_t).
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch


def coefficients(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Integer timesteps (B,) -> α_t, σ_t (B,)."""
    ac = alphas_cumprod.to(t.device)[t]
    return ac.sqrt(), (1 - ac).sqrt()


def add_noise(x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x_t = α_t x + σ_t ε for x, ε (B, C, h, w) and α, σ (B,)."""
    return alpha.view(-1, 1, 1, 1) * x + sigma.view(-1, 1, 1, 1) * eps


def denoised(x_t: torch.Tensor, eps_pred: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The one-step estimate x̂ = (x_t − σ_t ε̂) / α_t."""
    return (x_t - sigma.view(-1, 1, 1, 1) * eps_pred) / alpha.view(-1, 1, 1, 1)


def ddim(scheduler, steps: int):
    """A DDIM sampler with the training schedule of `scheduler` (any diffusers scheduler config), `steps` steps."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(scheduler.config, clip_sample=False, set_alpha_to_one=True)
    sched.set_timesteps(steps)
    return sched


@torch.no_grad()
def ddim_sample(predict: Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]],
                x: torch.Tensor, scheduler, steps: int, guidance_scale: float) -> torch.Tensor:
    """Run DDIM from noise x (B, C, h, w). predict(x_t, t (B,)) -> (ε_cond, ε_uncond); guidance uses the diffusers
    convention ε̂ = ε_u + s (ε_c − ε_u). Returns the final x (the prior's input space)."""
    sched = ddim(scheduler, steps)
    for t in sched.timesteps:
        tt = torch.full((x.shape[0],), int(t), device=x.device)
        eps_c, eps_u = predict(x, tt)
        x = sched.step(eps_u + guidance_scale * (eps_c - eps_u), t, x).prev_sample
    return x


@torch.no_grad()
def ddim_denoise(predict: Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]],
                 x_t: torch.Tensor, t_start: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int,
                 guidance_scale: float) -> torch.Tensor:
    """Deterministic DDIM (η = 0) from x_t at integer timesteps t_start (B,) down to t = 0 in `steps` evenly spaced
    steps per image (SDEdit's second half); predict as for ddim_sample. Returns the final x̂ (the prior's input
    space): the prior's clean image of x_t."""
    x = x_t
    for i in range(steps):
        t = torch.round(t_start.double() * (1.0 - i / steps)).long()
        t_next = torch.round(t_start.double() * (1.0 - (i + 1) / steps)).long()
        eps_c, eps_u = predict(x, t)
        eps = eps_c if eps_u is None else eps_u + guidance_scale * (eps_c - eps_u)
        alpha, sigma = coefficients(alphas_cumprod, t)
        x0 = denoised(x, eps, alpha, sigma)
        if i == steps - 1:
            return x0
        a_next, s_next = coefficients(alphas_cumprod, t_next)
        x = add_noise(x0, a_next, s_next, eps)  # x_{t'} = α' x̂ + σ' ε̂
    return x
