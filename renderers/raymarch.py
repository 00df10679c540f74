"""Ray marching and volume rendering as functions of tensors, plus the occupancy grid (the one stateful part).

Samples are laid out densely per ray, (R, S), which keeps compositing a cumulative product; the field is only
evaluated at the samples that the occupancy grid marks occupied, which is where the time goes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from dreamlmc.config import spec


def ray_sphere_near_far(rays_o: torch.Tensor, rays_d: torch.Tensor, radius: float
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """rays_o, rays_d: (R, 3), unit directions -> near, far (R,) and hit (R,) bool for a sphere at the origin."""
    b = (rays_o * rays_d).sum(-1)
    c = (rays_o * rays_o).sum(-1) - radius * radius
    disc = b * b - c
    hit = disc > 0
    root = torch.sqrt(disc.clamp(min=0))
    near = (-b - root).clamp(min=0)
    far = (-b + root).clamp(min=0)
    return near, far, hit & (far > near)


def stratified_samples(near: torch.Tensor, far: torch.Tensor, num_samples: int,
                       generator: Optional[torch.Generator] = None, perturb: bool = True
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(R,) near/far -> sample distances t (R, S) at jittered bin positions and bin lengths delta (R, S)."""
    R = near.shape[0]
    bins = torch.arange(num_samples, device=near.device, dtype=near.dtype)
    u = torch.rand(R, num_samples, generator=generator).to(near) if perturb else torch.full((R, num_samples), 0.5,
                                                                                           dtype=near.dtype)
    frac = (bins[None] + u.to(near.device)) / num_samples
    length = (far - near)[:, None]
    t = near[:, None] + frac * length
    delta = (length / num_samples).expand(R, num_samples)
    return t, delta


def composite_weights(density: torch.Tensor, delta: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """density, delta: (R, S) -> weights (R, S) and transmittance before each sample (R, S).

    weights_i = T_i (1 - exp(-sigma_i delta_i)), T_i = exp(-sum_{j<i} sigma_j delta_j); sum_i weights_i <= 1.
    """
    tau = density * delta
    alpha = 1.0 - torch.exp(-tau)
    trans = torch.exp(-(torch.cumsum(tau, dim=-1) - tau))
    return trans * alpha, trans


def accumulate(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """weights (R, S), values (R, S, C) -> (R, C)."""
    return (weights[..., None] * values).sum(1)


@dataclass
class OccupancyConfig:
    enabled: bool = True
    resolution: int = spec(32, ge=2, le=256)  # cells per axis over [-bound, bound]^3
    update_every: int = spec(16, ge=1)  # training steps between updates
    decay: float = spec(0.95, ge=0.0, le=1.0)  # EMA decay of the stored density
    threshold: float = spec(0.01, ge=0.0)  # a cell is occupied where its opacity over one sample step exceeds this
    # cells of margin around occupied ones. 0 (like nerfacc): measured on a fitted cube, a 1-cell margin evaluates
    # 65 % more samples (76k vs 46k per 64x64 render) for the same PSNR; surfaces still grow through the shared
    # coarse levels and the periodic re-evaluation of every cell.
    dilate: int = spec(0, ge=0, le=8)


class OccupancyGrid(torch.nn.Module):
    """A density grid over [-bound, bound]^3 used to skip empty space (pure PyTorch; cheap at 32^3)."""

    def __init__(self, cfg: OccupancyConfig, bound: float, step_size: float):
        super().__init__()
        self.cfg, self.bound, self.step_size = cfg, bound, step_size
        n = cfg.resolution
        self.register_buffer("density", torch.zeros(n, n, n))
        self.register_buffer("mask", torch.ones(n, n, n, dtype=torch.bool))
        # density eroded by one cell (min over the 3x3x3 neighbourhood): a lower bound away from surfaces, used for
        # the transmittance estimate so that early termination never cuts a ray before the surface it hits
        self.register_buffer("interior_density", torch.zeros(n, n, n))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, density_fn: Callable[[torch.Tensor], torch.Tensor], generator: Optional[torch.Generator] = None):
        n, dev = self.cfg.resolution, self.density.device
        idx = torch.stack(torch.meshgrid(*[torch.arange(n, device=dev)] * 3, indexing="ij"), -1).reshape(-1, 3)
        jitter = torch.rand(idx.shape, generator=generator).to(dev)
        pts = ((idx + jitter) / n * 2 - 1) * self.bound
        new = torch.cat([density_fn(chunk) for chunk in pts.split(65536)]).reshape(n, n, n)
        first = int(self.updates) == 0
        self.density.copy_(new if first else torch.maximum(self.density * self.cfg.decay, new))
        occ = (self.density * self.step_size) > self.cfg.threshold
        if self.cfg.dilate > 0:
            k = 2 * self.cfg.dilate + 1
            occ = F.max_pool3d(occ[None, None].float(), k, stride=1, padding=self.cfg.dilate)[0, 0] > 0
        self.mask.copy_(occ)
        padded = F.pad(self.density[None, None], (1, 1, 1, 1, 1, 1), value=0.0)
        self.interior_density.copy_(-F.max_pool3d(-padded, 3, stride=1)[0, 0])
        self.updates += 1

    def occupied(self, pts: torch.Tensor) -> torch.Tensor:
        """pts (..., 3) -> bool (...): inside the grid and in an occupied cell."""
        n = self.cfg.resolution
        cell = ((pts / self.bound * 0.5 + 0.5) * n).floor().long()
        inside = ((cell >= 0) & (cell < n)).all(-1)
        cell = cell.clamp(0, n - 1)
        return inside & self.mask[cell[..., 0], cell[..., 1], cell[..., 2]]

    def lookup_density(self, pts: torch.Tensor) -> torch.Tensor:
        """pts (..., 3) -> the grid's eroded (interior) density (...), 0 outside the grid or in unoccupied cells."""
        n = self.cfg.resolution
        cell = ((pts / self.bound * 0.5 + 0.5) * n).floor().long()
        inside = ((cell >= 0) & (cell < n)).all(-1)
        cell = cell.clamp(0, n - 1)
        d = self.interior_density[cell[..., 0], cell[..., 1], cell[..., 2]]
        return torch.where(inside & self.mask[cell[..., 0], cell[..., 1], cell[..., 2]], d, torch.zeros_like(d))

    def occupancy_fraction(self) -> float:
        return float(self.mask.float().mean())
