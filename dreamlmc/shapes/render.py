"""Ground-truth renders of the world by sphere tracing its analytic SDFs, with the NeRF renderer's shading."""
from __future__ import annotations

from typing import Dict, List, Tuple, Union

import torch
import torch.nn.functional as F

from dreamlmc.cameras import CameraBatch, generate_rays
from dreamlmc.shapes.world import AMBIENT, BACKGROUND, BOUND_RADIUS, DIFFUSE, SDFS


def lambertian(albedo: torch.Tensor, normal: torch.Tensor, light_dir: torch.Tensor, ambient: float,
               diffuse: float) -> torch.Tensor:
    """The renderer's Lambertian model (renderers/shading.py), restated so the world imports no renderer; a test
    keeps the two identical."""
    return albedo * (ambient + diffuse * (normal * light_dir).sum(-1, keepdim=True).clamp(min=0.0))



@torch.no_grad()
def render_shapes(shapes: List[str], albedos: torch.Tensor, cameras: CameraBatch, ambient: float = AMBIENT,
                  diffuse: float = DIFFUSE, supersample: int = 2, steps: int = 64, mode: str = "lambertian",
                  background: Union[Tuple[float, float, float], torch.Tensor] = BACKGROUND
                  ) -> Dict[str, torch.Tensor]:
    """Ground-truth renders by sphere tracing the analytic SDFs.

    shapes: B names; albedos: (B, 3); cameras: B cameras at the output resolution (H, W). Rays are re-generated
    at `supersample` x the resolution and box-filtered down (anti-aliasing).
    Returns rgb (B, 3, H, W) in [0, 1], mask (B, 1, H, W) coverage in [0, 1], depth (B, 1, H, W) (0 on background).
    mode: "lambertian" (the prior's data), "albedo" (flat colour) or "normal". background: one RGB for all, or (B, 3).
    """
    B, H, W = len(shapes), cameras.height, cameras.width
    rays_o, rays_d = generate_rays(cameras.c2w, cameras.fovy, H * supersample, W * supersample)
    o, d = rays_o.reshape(B, -1, 3), rays_d.reshape(B, -1, 3)
    # start at the bounding sphere
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - BOUND_RADIUS ** 2
    disc = b * b - c
    valid = disc > 0
    t = (-b - torch.sqrt(disc.clamp(min=0))).clamp(min=0)
    t_far = -b + torch.sqrt(disc.clamp(min=0))
    fns = [SDFS[s] for s in shapes]

    def field(p: torch.Tensor) -> torch.Tensor:  # p (B, N, 3)
        return torch.stack([fns[i](p[i]) for i in range(B)])

    hit = torch.zeros_like(valid)
    for _ in range(steps):
        dist = field(o + t[..., None] * d)
        hit = valid & (dist.abs() < 1e-4)
        t = torch.where(valid & ~hit, t + dist, t)
        valid = valid & (t < t_far + 1e-3)
    dist = field(o + t[..., None] * d)
    hit = valid & (dist.abs() < 2e-3)
    p = o + t[..., None] * d
    eps = 1e-3
    offs = torch.eye(3, dtype=p.dtype, device=p.device) * eps
    grad = torch.stack([field(p + offs[k]) - field(p - offs[k]) for k in range(3)], dim=-1)
    normal = F.normalize(grad, dim=-1)
    alb = albedos[:, None, :].expand_as(p)
    if mode == "lambertian":
        light_dir = F.normalize(cameras.light_pos[:, None, :] - p, dim=-1)
        colour = lambertian(alb, normal, light_dir, ambient, diffuse)
    elif mode == "albedo":
        colour = alb
    elif mode == "normal":
        colour = 0.5 * (normal + 1)
    else:
        raise ValueError(mode)
    bg = torch.as_tensor(background, dtype=p.dtype).to(p.device)
    if bg.dim() == 2:  # one colour per image (B, 3)
        bg = bg[:, None, :]
    rgb = torch.where(hit[..., None], colour, bg)
    hs, ws = H * supersample, W * supersample
    rgb = rgb.reshape(B, hs, ws, 3).permute(0, 3, 1, 2)
    mask = hit.float().reshape(B, 1, hs, ws)
    depth = torch.where(hit, t, torch.zeros_like(t)).reshape(B, 1, hs, ws)
    if supersample > 1:
        rgb, mask = F.avg_pool2d(rgb, supersample), F.avg_pool2d(mask, supersample)
        depth = F.avg_pool2d(depth, supersample) / F.avg_pool2d((depth > 0).float(), supersample).clamp(min=1e-6)
    return {"rgb": rgb.clamp(0, 1), "mask": mask, "depth": depth}
