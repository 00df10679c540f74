"""The NeRF field: hash-grid features -> geometry and albedo; normals; background.

Two geometries (FieldConfig.geometry):
- "density": the MLP's first output is a raw density (softplus, plus a centre blob at init), DreamFusion-style.
- "sdf": the first output is a signed distance (a sphere at init), turned into density VolSDF-style,
  σ = Ψ_β(−sdf) / β with Ψ_β the Laplace CDF: opaque (1/β) inside, falling off over a few β outside. The surface is
  the zero level set (no iso-level to choose), a flat face is represented exactly by the trilinear grid, and a
  semi-transparent halo cannot form wider than β. β follows a schedule over training (set_progress).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from dreamlmc.renderers.hash_grid import HashEncoding, HashGridConfig
from dreamlmc.config import spec

# tetrahedral finite-difference stencil: sum_i k_i f(x + e k_i) = 4 e grad f(x) + O(e^3)
_TETRA = ((1, -1, -1), (-1, -1, 1), (-1, 1, -1), (1, 1, 1))


@dataclass
class FieldConfig:
    hash_grid: HashGridConfig = field(default_factory=HashGridConfig)
    hidden_dim: int = spec(64, ge=1, le=4096)
    bound: float = spec(1.0, gt=0.0, le=100.0)  # the field lives in [-bound, bound]^3 (scene units)
    geometry: Literal["density", "sdf"] = "density"
    # density geometry: bias blob_density * (1 - r / blob_radius) (Magic3D/threestudio style), a solid ball at init
    # so the first renders are not empty, and clearly empty space far from the centre. sdf geometry: a sphere of
    # radius blob_radius at init.
    blob_density: float = spec(10.0, ge=0.0, le=1e4)
    blob_radius: float = spec(0.5, gt=0.0, le=100.0)
    # sdf geometry: the Laplace scale β (scene units) of the density, annealed geometrically from sdf_beta to
    # sdf_beta_end over training (None: constant)
    sdf_beta: float = spec(0.05, gt=0.0, le=1.0)
    sdf_beta_end: Optional[float] = spec(None, gt=0.0, le=1.0)
    # sdf geometry: how opacity follows from the sdf along a ray. "volsdf": density Ψ_β(−sdf)/β per sample;
    # "neus": α_i = (Φ(s_i) − Φ(s_i+1)) / Φ(s_i) from consecutive samples, Φ a sigmoid of scale β (NeuS's
    # discrete opacity: 50 % opacity exactly where a ray meets the zero level set, silhouettes included)
    sdf_rendering: Literal["volsdf", "neus"] = "volsdf"
    # coarse-to-fine: only the first progressive_start levels at first, all of them from progressive_until (a
    # fraction of training) on, levels switched on evenly in between (None: all levels throughout)
    progressive_start: Optional[int] = spec(None, ge=1, le=32)
    progressive_until: float = spec(0.5, ge=0.0, le=1.0)
    normal_eps: float = spec(0.01, gt=0.0, le=0.5)  # finite-difference step for normals (scene units)
    # random: a random solid colour per training view; grey: a random grey level in background_grey_range per
    # training view (the built-in prior's other backgrounds); both are white outside training (previews, turntables,
    # evaluation)
    background: Literal["white", "black", "random", "grey", "mlp"] = "white"
    background_grey_range: Tuple[float, float] = spec((0.35, 0.75), ge=0.0, le=1.0, ordered=True)
    # grey only: the share of training views that stay white (the rest get a grey), for a prior trained on a mix
    background_white_prob: float = spec(0.0, ge=0.0, le=1.0)
    # a schedule for that share: it moves linearly from background_white_prob at the start of training to this value
    # at the end (None: constant), e.g. 0 -> 1 for dark grounds early (silhouettes) and white ones late
    background_white_prob_end: Optional[float] = spec(None, ge=0.0, le=1.0)
    background_hidden_dim: int = spec(16, ge=1, le=1024)


class NeRFField(nn.Module):
    """Positions (N, 3) in scene units -> density (N,) >= 0 and albedo (N, 3) in [0, 1]."""

    def __init__(self, cfg: FieldConfig = FieldConfig(), device=None):
        super().__init__()
        self.cfg = cfg
        self.encoding = HashEncoding(cfg.hash_grid, device=device)
        self.mlp = nn.Sequential(nn.Linear(self.encoding.output_dim, cfg.hidden_dim), nn.ReLU(inplace=True),
                                 nn.Linear(cfg.hidden_dim, 4))
        if cfg.background == "mlp":
            self.background_mlp = nn.Sequential(nn.Linear(3, cfg.background_hidden_dim), nn.ReLU(inplace=True),
                                                nn.Linear(cfg.background_hidden_dim, 3))
        self.beta = cfg.sdf_beta  # current β of the sdf geometry (a function of training progress, not state)
        self.active_levels = cfg.hash_grid.num_levels  # progressive levels: how many are switched on now
        self.white_prob = cfg.background_white_prob  # current share of white training views (grey backgrounds)
        if self.is_sdf:
            with torch.no_grad():  # the sdf starts as exactly the sphere; gradients still reach this row's weights
                self.mlp[-1].weight[0].zero_()
                self.mlp[-1].bias[0].zero_()

    @property
    def is_sdf(self) -> bool:
        return self.cfg.geometry == "sdf"

    def set_progress(self, fraction: float) -> None:
        """Training progress in [0, 1]: moves β (sdf geometry), the active levels and the white share along their
        schedules."""
        c = self.cfg
        f = min(max(fraction, 0.0), 1.0)
        if c.background_white_prob_end is not None:
            self.white_prob = c.background_white_prob + f * (c.background_white_prob_end - c.background_white_prob)
        if c.sdf_beta_end is not None:
            self.beta = c.sdf_beta * (c.sdf_beta_end / c.sdf_beta) ** f
        if c.progressive_start is not None:
            L, L0 = c.hash_grid.num_levels, min(c.progressive_start, c.hash_grid.num_levels)
            ramp = 1.0 if c.progressive_until <= 0 else min(1.0, f / c.progressive_until)
            self.active_levels = L0 + int(ramp * (L - L0) + 1e-9)

    def blob(self, x: torch.Tensor) -> torch.Tensor:
        return self.cfg.blob_density * (1.0 - x.norm(dim=-1) / self.cfg.blob_radius)

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoding((x / self.cfg.bound * 0.5 + 0.5).clamp(0.0, 1.0))
        if self.active_levels < self.cfg.hash_grid.num_levels:
            F_ = self.cfg.hash_grid.features_per_level
            mask = torch.zeros(feats.shape[1], dtype=feats.dtype, device=feats.device)
            mask[: self.active_levels * F_] = 1.0
            feats = feats * mask
        return self.mlp(feats)

    def _geometry(self, h0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The geometry channel: sdf (scene units) or the density's pre-activation."""
        if self.is_sdf:
            return h0 + (x.norm(dim=-1) - self.cfg.blob_radius)
        return h0 + self.blob(x)

    def density_from_geometry(self, g: torch.Tensor) -> torch.Tensor:
        if self.is_sdf:
            b = self.beta
            # Laplace CDF of -sdf through one exp of a non-positive argument: both branches of a where are
            # evaluated, and an exp(|sdf|/β) that overflows in the unused one makes a NaN gradient (measured: 22-51
            # skipped steps, then a stopped run, where a steep sdf reached |sdf| > 88 β)
            e = torch.exp(-g.abs() / b)
            return torch.where(g > 0, 0.5 * e, 1.0 - 0.5 * e) / b
        return F.softplus(g)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        g, albedo = self.geometry_and_albedo(x)
        return self.density_from_geometry(g), albedo

    def geometry_and_albedo(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """-> the geometry channel (sdf, or the density's pre-activation) (N,) and albedo (N, 3) in [0, 1]."""
        h = self._raw(x)
        return self._geometry(h[:, 0], x), torch.sigmoid(h[:, 1:])

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[0]

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        """Signed distance (N,), negative inside (sdf geometry only)."""
        if not self.is_sdf:
            raise ValueError("sdf() needs renderer.field.geometry=sdf")
        return self._geometry(self._raw(x)[:, 0], x)

    def geometry_gradient(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial gradient (N, 3) of the geometry channel (sdf, or density) by tetrahedral finite differences
        (4 evaluations instead of 6); differentiable w.r.t. the field's parameters."""
        e = self.cfg.normal_eps
        k = torch.tensor(_TETRA, dtype=x.dtype, device=x.device)
        q = (x[:, None, :] + e * k[None]).reshape(-1, 3)
        g = self.sdf(q) if self.is_sdf else self.density(q)
        return (g.reshape(-1, 4)[:, :, None] * k[None]).sum(1) / (4.0 * e)

    def normals(self, x: torch.Tensor) -> torch.Tensor:
        """Outward unit normals (N, 3): grad(sdf) for the sdf geometry, -grad(density) for density."""
        return self.normals_and_gradient(x)[0]

    def normals_and_gradient(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        grad = self.geometry_gradient(x)
        n = F.normalize(grad if self.is_sdf else -grad, dim=-1, eps=1e-8)
        return n, grad

    def background(self, dirs: torch.Tensor, generator: torch.Generator = None) -> torch.Tensor:
        """dirs (B, H, W, 3) -> background colour (B, H, W, 3)."""
        kind = self.cfg.background
        if kind in ("random", "grey") and not self.training:
            kind = "white"  # random backgrounds are a training augmentation; previews and evaluation show white
        if kind == "white":
            return torch.ones_like(dirs)
        if kind == "black":
            return torch.zeros_like(dirs)
        if kind == "random":
            colour = torch.rand(dirs.shape[0], 1, 1, 3, generator=generator).to(dirs)
            return colour.expand_as(dirs)
        if kind == "grey":
            lo, hi = self.cfg.background_grey_range
            level = lo + (hi - lo) * torch.rand(dirs.shape[0], 1, 1, 1, generator=generator).to(dirs)
            if self.white_prob > 0:
                white = torch.rand(dirs.shape[0], 1, 1, 1, generator=generator).to(dirs) < self.white_prob
                level = torch.where(white, torch.ones_like(level), level)
            return level.expand_as(dirs)
        if kind == "mlp":
            return torch.sigmoid(self.background_mlp(dirs))
        raise ValueError(f"unknown background {kind!r}")


def eikonal(grad: torch.Tensor) -> torch.Tensor:
    """Mean (|grad sdf| - 1)^2 over points (N, 3); 0 for N = 0."""
    if grad.shape[0] == 0:
        return grad.new_zeros(())
    return ((grad.norm(dim=-1) - 1.0) ** 2).mean()

