"""Shading models shared by the NeRF renderer and the built-in prior's data generator.

All colours are linear RGB in [0, 1]; normals and light directions are unit vectors in world space.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from dreamlmc.config import spec

SHADING_MODES = ("albedo", "lambertian", "textureless", "normal")


@dataclass
class ShadingConfig:
    ambient: float = spec(0.2, ge=0.0, le=2.0)
    diffuse: float = spec(0.8, ge=0.0, le=2.0)
    # Per-step probabilities of (albedo, lambertian, textureless) after the albedo-only warm-up.
    probabilities: Tuple[float, float, float] = spec((0.25, 0.375, 0.375), ge=0.0, le=1.0, sums_to=1.0)
    albedo_warmup_steps: int = spec(0, ge=0)
    textureless_albedo: float = spec(0.8, ge=0.0, le=1.0)  # grey level used for the textureless shading


def lambertian(albedo: torch.Tensor, normal: torch.Tensor, light_dir: torch.Tensor,
               ambient: float, diffuse: float) -> torch.Tensor:
    """albedo (..., 3), normal (..., 3), light_dir (..., 3) unit vectors towards the light -> colour (..., 3)."""
    cos = (normal * light_dir).sum(-1, keepdim=True).clamp(min=0.0)
    return albedo * (ambient + diffuse * cos)


def shade(mode: str, albedo: torch.Tensor, normal: torch.Tensor, light_dir: torch.Tensor,
          cfg: ShadingConfig) -> torch.Tensor:
    """Colour of surface points under one of SHADING_MODES; shapes as in :func:`lambertian`."""
    if mode == "albedo":
        return albedo
    if mode == "lambertian":
        return lambertian(albedo, normal, light_dir, cfg.ambient, cfg.diffuse)
    if mode == "textureless":
        grey = torch.full_like(albedo, cfg.textureless_albedo)
        return lambertian(grey, normal, light_dir, cfg.ambient, cfg.diffuse)
    if mode == "normal":
        return 0.5 * (normal + 1.0)
    raise ValueError(f"unknown shading mode {mode!r}; expected one of {SHADING_MODES}")


def choose_mode(step: int, cfg: ShadingConfig, generator: torch.Generator) -> str:
    """Albedo only during the warm-up, then albedo / lambertian / textureless by cfg.probabilities."""
    if step < cfg.albedo_warmup_steps:
        return "albedo"
    p = torch.tensor(cfg.probabilities, dtype=torch.float64)
    return ("albedo", "lambertian", "textureless")[int(torch.multinomial(p, 1, generator=generator))]
