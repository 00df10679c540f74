"""Render a CameraBatch through the NeRF field: samples -> occupancy skip -> field -> shading -> compositing.

Returns images as (B, C, H, W) tensors and the regularisers (orientation, sparsity) as scalars; it knows nothing
of the guidance that will consume the images.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from dreamlmc.renderers.field import FieldConfig, NeRFField, eikonal
from dreamlmc.renderers.raymarch import (OccupancyConfig, OccupancyGrid, accumulate, composite_weights,
                                         ray_sphere_near_far, stratified_samples)
from dreamlmc.renderers.shading import ShadingConfig, shade
from dreamlmc.config import spec


@dataclass
class RendererConfig:
    field: FieldConfig = dc_field(default_factory=FieldConfig)
    occupancy: OccupancyConfig = dc_field(default_factory=OccupancyConfig)
    shading: ShadingConfig = dc_field(default_factory=ShadingConfig)
    num_samples: int = spec(48, ge=1, le=1024)  # stratified samples per ray through the bounding sphere
    normal_weight_threshold: float = spec(1e-3, ge=0.0, le=1.0)  # normals only where a sample's weight exceeds this (-25 % render time)
    # Skip samples behind what the occupancy grid's stored densities say is opaque (transmittance estimate below
    # this); 0 disables. The grid is conservative (an EMA of maxima), so a few samples into a surface still run.
    early_stop_eps: float = spec(1e-4, ge=0.0, lt=1.0)
    march_chunks: int = spec(4, ge=1, le=64)  # samples are evaluated front to back in this many chunks, stopping opaque rays early
    orientation_weight: float = spec(0.01, ge=0.0)
    sparsity_weight: float = spec(0.0, ge=0.0)
    sparsity_eps: float = spec(0.01, gt=0.0)
    # the sparsity weight grows linearly from 0 over this fraction of training (0: full weight from the start); an
    # opacity penalty at full strength from step 0 can empty an sdf before the guidance has shaped it
    sparsity_ramp: float = spec(0.0, ge=0.0, le=1.0)
    # extra views per step from below (elevations in sparsity_below_elevation, half the training resolution) that
    # only the opacity penalty sees: the guided views (elevations 0-30) never see the underside, where a skirt can
    # hang unpenalised (measured: default cones reach 0.08-0.19 below their base, white cubes 0.12-0.48). One view
    # removes the skirts but flattens the white cube (README row 65); 0: none
    sparsity_below_views: int = spec(0, ge=0, le=16)
    sparsity_below_elevation: Tuple[float, float] = spec((-60.0, -20.0), ge=-90.0, le=0.0, ordered=True)
    # weight of a volume penalty: the mean occupancy (sdf: the Laplace CDF of −sdf/β, the density's own [0, 1]
    # factor; density: one march step's alpha) at volume_points random points of the box per training render. The
    # opacity penalty sees only what a view renders, so density hidden behind a surface (a skirt below the base,
    # which the guided views at elevations 0-30 see edge-on at most) costs nothing; this term costs it the same
    # as visible density. Shares the opacity penalty's ramp. In place of half the opacity penalty it hollows the
    # objects, whose interior is as hidden as a skirt (IoU −0.241 over 5 prompts, README row 104); 0 disables
    volume_weight: float = spec(0.0, ge=0.0)
    volume_points: int = spec(1024, ge=1, le=1_000_000)
    # sdf geometry: weight of the eikonal term (|grad sdf| = 1) at the shaded samples and at eikonal_points random
    # points of the box per training render (keeps the sdf a distance away from the surface too)
    eikonal_weight: float = spec(0.1, ge=0.0)
    eikonal_points: int = spec(1024, ge=0, le=1_000_000)
    # weight of a normal-smoothness term: 1 − cos between the normal at up to smooth_points surface samples
    # (weight above normal_weight_threshold) and at a point smooth_radius away from each (threestudio's 3D normal
    # smoothness); 0 disables. Against pitted surfaces.
    smooth_weight: float = spec(0.0, ge=0.0)
    smooth_points: int = spec(512, ge=1, le=1_000_000)
    smooth_radius: float = spec(0.02, gt=0.0, le=1.0)
    # weight of the depth variance along rays (HiFA's z-variance): Σ w (t − d)² / Σ w with d the ray's mean depth,
    # averaged over the rays whose opacity exceeds 0.5; 0 disables. Thins the soft shell of weights along a ray.
    z_variance_weight: float = spec(0.0, ge=0.0)
    # weight of the binary entropy of each pixel's opacity (threestudio's opaque loss): pushes pixels to empty or
    # opaque, against translucent "ghost" objects; 0 disables
    entropy_weight: float = spec(0.0, ge=0.0)


class Renderer(nn.Module):
    def __init__(self, cfg: RendererConfig = RendererConfig(), device=None):
        """device: where the renderer will run (it picks the hash encoding's implementation: tiny-cuda-nn on CUDA)."""
        super().__init__()
        self.cfg = cfg
        self.field = NeRFField(cfg.field, device=device)
        step = 2.0 * cfg.field.bound / cfg.num_samples  # longest chord / samples
        self.occupancy = OccupancyGrid(cfg.occupancy, cfg.field.bound, step)

    def set_progress(self, fraction: float) -> None:
        """Training progress in [0, 1] (schedules of the field, e.g. the sdf geometry's β)."""
        self.field.set_progress(fraction)

    @torch.no_grad()
    def update_occupancy(self, step: int, generator: Optional[torch.Generator] = None, force: bool = False) -> bool:
        oc = self.cfg.occupancy
        if oc.enabled and (force or step % oc.update_every == 0):
            self.occupancy.update(self.field.density, generator)
            return True
        return False

    def forward(self, cameras, mode: str = "albedo", generator: Optional[torch.Generator] = None,
                perturb: bool = True, chunk: Optional[int] = None) -> Dict[str, torch.Tensor]:
        """cameras: a CameraBatch (rays (B, H, W, 3)); mode: a shading mode or a tuple of them (one pass, the first
        is "rgb", the others "rgb_<mode>") -> dict with rgb (B, 3, H, W) in [0, 1], opacity (B, 1, H, W),
        depth (B, 1, H, W), normal (B, 3, H, W) in [0, 1] (where computed), scalar losses orientation, sparsity
        (unweighted), and the counts points (samples evaluated) and inside_points (those with sdf < 0)."""
        B, H, W = cameras.rays_o.shape[:3]
        if chunk is not None:
            return self._render_chunked(cameras, mode, generator, perturb, chunk)
        rays_o = cameras.rays_o.reshape(-1, 3)
        rays_d = cameras.rays_d.reshape(-1, 3)
        out = self.render_rays(rays_o, rays_d, cameras.light_pos.repeat_interleave(H * W, 0), mode, generator,
                               perturb)
        bg = self.field.background(cameras.rays_d, generator).reshape(-1, 3)

        def img(x):
            return x.reshape(B, H, W, -1).permute(0, 3, 1, 2)

        result = {"opacity": img(out["opacity"]), "depth": img(out["depth"]), "background": img(bg),
                  "orientation": out["orientation"], "sparsity": out["sparsity"], "points": out["points"],
                  "inside_points": out["inside_points"], "eikonal": out["eikonal"], "smoothness": out["smoothness"],
                  "z_variance": out["z_variance"]}
        if self.field.is_sdf and self.training and self.cfg.eikonal_points > 0:
            b = self.cfg.field.bound
            pts = (torch.rand(self.cfg.eikonal_points, 3, generator=generator) * 2 - 1).to(rays_o) * b
            result["eikonal"] = 0.5 * (result["eikonal"] + eikonal(self.field.geometry_gradient(pts)))
        result["volume"] = torch.zeros((), device=rays_o.device)
        if self.training and self.cfg.volume_weight > 0:
            result["volume"] = self.volume_occupancy(generator)
        for k in [k for k in out if k.startswith("rgb")]:
            result[k] = img(out[k] + (1.0 - out["opacity"]) * bg)
        if "normal" in out:
            # normal image: composited unit normals mapped to [0, 1], background at (0.5, 0.5, 1) like the peers
            result["normal"] = img(0.5 * (out["normal"] + 1) * out["opacity"] + (1 - out["opacity"]) *
                                   torch.tensor([0.5, 0.5, 1.0], device=bg.device))
        return result

    def volume_occupancy(self, generator: Optional[torch.Generator] = None, points: Optional[int] = None) -> torch.Tensor:
        """Mean occupancy in [0, 1] of the field at `points` (default volume_points) uniform random points of the box
        [-bound, bound]³ (RendererConfig.volume_weight)."""
        b = self.cfg.field.bound
        device = next(self.field.parameters()).device
        pts = ((torch.rand(points or self.cfg.volume_points, 3, generator=generator) * 2 - 1) * b).to(device)
        return self.occupancy_at(pts)

    def occupancy_at(self, pts: torch.Tensor) -> torch.Tensor:
        """Mean occupancy in [0, 1] of the field at the points pts (N, 3) (volume_occupancy's measure)."""
        b = self.cfg.field.bound
        g, _ = self.field.geometry_and_albedo(pts)
        density = self.field.density_from_geometry(g)
        if self.field.is_sdf:
            return (density * self.field.beta).mean()
        return (1.0 - torch.exp(-density * 2.0 * b / self.cfg.num_samples)).mean()

    def render_rays(self, rays_o, rays_d, light_pos, mode, generator=None, perturb=True) -> Dict[str, torch.Tensor]:
        cfg = self.cfg
        R, S = rays_o.shape[0], cfg.num_samples
        near, far, hit = ray_sphere_near_far(rays_o, rays_d, cfg.field.bound)
        t, delta = stratified_samples(near, far, S, generator, perturb)
        pts = rays_o[:, None, :] + t[..., None] * rays_d[:, None, :]  # (R, S, 3)
        valid = hit[:, None].expand(R, S)
        if cfg.occupancy.enabled and int(self.occupancy.updates) > 0:
            grid_density = self.occupancy.lookup_density(pts)
            valid = valid & self.occupancy.occupied(pts)
            if cfg.early_stop_eps > 0:
                tau = grid_density * delta
                valid = valid & (torch.exp(-(torch.cumsum(tau, -1) - tau)) > cfg.early_stop_eps)
        density, albedo, n_points, n_inside = self._march(pts, delta, valid)
        weights, _ = composite_weights(density, delta)
        opacity = weights.sum(-1, keepdim=True)
        depth = (weights * t).sum(-1, keepdim=True)
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
        need_normals = modes != ("albedo",) or (cfg.orientation_weight > 0 and self.training)
        orientation = torch.zeros((), device=pts.device)
        eik = torch.zeros((), device=pts.device)
        smooth = torch.zeros((), device=pts.device)
        out = {}
        if need_normals:
            nsel = (weights.detach() > cfg.normal_weight_threshold).nonzero(as_tuple=True)
            normals = torch.zeros(R, S, 3, device=pts.device, dtype=pts.dtype)
            if nsel[0].numel() > 0:
                if self.field.is_sdf:
                    n_sel, grad_sel = self.field.normals_and_gradient(pts[nsel])
                    eik = eikonal(grad_sel)
                else:
                    n_sel = self.field.normals(pts[nsel])
                normals = normals.index_put(nsel, n_sel)
                if cfg.smooth_weight > 0 and self.training:
                    smooth = self._smoothness(pts[nsel], n_sel, generator)
            # DreamFusion's orientation loss: normals facing away from the camera, weighted by (detached) weights
            facing = (normals * rays_d[:, None, :]).sum(-1).clamp(min=0)
            orientation = (weights.detach() * facing ** 2).sum(-1).mean()
            light_dir = F.normalize(light_pos[:, None, :] - pts, dim=-1)
            colours = [shade(m, albedo, normals, light_dir, cfg.shading) for m in modes]
            out["normal"] = accumulate(weights, normals)
        else:
            colours = [albedo]
        out["rgb"] = accumulate(weights, colours[0])
        for m, c in zip(modes[1:], colours[1:]):
            out["rgb_" + m] = accumulate(weights, c)
        zvar = torch.zeros((), device=pts.device)
        if cfg.z_variance_weight > 0 and self.training:
            zvar = _z_variance(weights, t, opacity)
        out.update(opacity=opacity, depth=depth, orientation=orientation, eikonal=eik, smoothness=smooth,
                   z_variance=zvar,
                   sparsity=torch.sqrt(opacity ** 2 + cfg.sparsity_eps).mean(),
                   points=torch.tensor(float(n_points)),
                   inside_points=torch.as_tensor(n_inside, device=pts.device).float())
        return out

    def _smoothness(self, surface_pts, normals, generator=None) -> torch.Tensor:
        """Mean 1 − cos(n(p), n(p + δ)) over up to smooth_points of the surface samples, δ ~ N(0, smooth_radius²)."""
        cfg = self.cfg
        n = surface_pts.shape[0]
        if n > cfg.smooth_points:
            idx = torch.randperm(n, generator=generator)[:cfg.smooth_points].to(surface_pts.device)
            surface_pts, normals = surface_pts[idx], normals[idx]
        jitter = torch.randn(surface_pts.shape, generator=generator).to(surface_pts) * cfg.smooth_radius
        moved = self.field.normals(surface_pts.detach() + jitter)
        return (1.0 - (normals * moved).sum(-1)).mean()

    def _march(self, pts, delta, valid):
        """Evaluate the field at valid samples, front to back in cfg.march_chunks chunks of samples; a ray whose
        transmittance (from the densities already evaluated) falls below early_stop_eps is not evaluated further.
        -> density (R, S) (for NeuS opacity, the density whose α over each sample's interval is NeuS's), albedo
        (R, S, 3), number of points evaluated, and how many of them lie inside the surface (sdf < 0; 0 for the
        density geometry, which has no surface of its own)."""
        cfg = self.cfg
        R, S = valid.shape
        neus = self.field.is_sdf and self.field.cfg.sdf_rendering == "neus"
        # skipped samples: no density; for NeuS a far-outside sdf (Φ = 1), and no opacity for their intervals
        fill = _FAR_SDF if neus else 0.0
        geo_parts, alb_parts, n_points, n_inside = [], [], 0, 0
        trans = torch.ones(R, device=pts.device, dtype=pts.dtype)
        prev_last = torch.full((R,), fill, device=pts.device, dtype=pts.dtype)
        bounds = torch.linspace(0, S, max(1, cfg.march_chunks) + 1).round().long().tolist()
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            v = valid[:, lo:hi]
            if cfg.early_stop_eps > 0 and lo > 0:
                v = v & (trans > cfg.early_stop_eps)[:, None]
            sel = v.nonzero(as_tuple=True)
            g = torch.full((R, hi - lo), fill, device=pts.device, dtype=pts.dtype)
            a = torch.zeros(R, hi - lo, 3, device=pts.device, dtype=pts.dtype)
            if sel[0].numel() > 0:
                g_sel, a_sel = self.field.geometry_and_albedo(pts[:, lo:hi][sel])
                g = g.index_put(sel, g_sel if neus else self.field.density_from_geometry(g_sel))
                a = a.index_put(sel, a_sel)
                n_points += sel[0].numel()
                if self.field.is_sdf:  # a tensor: no device sync per chunk
                    n_inside = n_inside + (g_sel.detach() < 0).sum()
            if neus:  # opacity so far: chunks overlap by one sample for the consecutive differences
                d = _neus_density(torch.cat([prev_last[:, None], g], 1).detach(), self.field.beta,
                                  delta[:, lo - 1:hi])[:, 1:] if lo > 0 else \
                    _neus_density(g.detach(), self.field.beta, delta[:, lo:hi])
                trans = trans * torch.exp(-(d * delta[:, lo:hi]).sum(-1))
                prev_last = g[:, -1].detach()
            else:
                trans = trans * torch.exp(-(g.detach() * delta[:, lo:hi]).sum(-1))
            geo_parts.append(g)
            alb_parts.append(a)
        geo = torch.cat(geo_parts, 1)
        density = _neus_density(geo, self.field.beta, delta) if neus else geo
        return density, torch.cat(alb_parts, 1), n_points, n_inside

    @torch.no_grad()
    def _render_chunked(self, cameras, mode, generator, perturb, chunk):
        """Evaluation renders of large images, one camera at a time (no gradients)."""
        from dreamlmc.cameras import CameraBatch

        outs = []
        for i in range(cameras.rays_o.shape[0]):
            one = CameraBatch(*(getattr(cameras, k)[i:i + 1] for k in
                                ("rays_o", "rays_d", "c2w", "elevation", "azimuth", "radius", "fovy", "light_pos")),
                              views=cameras.views[i:i + 1])
            outs.append(self.forward(one, mode, generator, perturb))
        keys = [k for k in outs[0] if outs[0][k].dim() == 4]
        return {k: torch.cat([o[k] for o in outs]) for k in keys}


def opacity_entropy(opacity: torch.Tensor) -> torch.Tensor:
    """Mean binary entropy −o log o − (1 − o) log(1 − o) of opacities (nats): 0 for empty or opaque pixels,
    log 2 for half-transparent ones."""
    o = opacity.clamp(1e-5, 1.0 - 1e-5)
    return -(o * torch.log(o) + (1.0 - o) * torch.log1p(-o)).mean()


def _z_variance(weights: torch.Tensor, t: torch.Tensor, opacity: torch.Tensor) -> torch.Tensor:
    """weights, t (R, S), opacity (R, 1) -> mean over rays with opacity > 0.5 of Σ w (t − d)² / Σ w, d = Σ w t / Σ w
    (0 when no ray is that opaque)."""
    mask = opacity[:, 0].detach() > 0.5
    if not bool(mask.any()):
        return torch.zeros((), device=t.device, dtype=t.dtype)
    w, tt, o = weights[mask], t[mask], opacity[mask]
    mean = (w * tt).sum(-1, keepdim=True) / o
    return ((w * (tt - mean) ** 2).sum(-1, keepdim=True) / o).mean()


_FAR_SDF = 10.0  # the sdf given to samples that were not evaluated (empty space: Φ = 1 in float32)


def _neus_density(sdf: torch.Tensor, scale: float, delta: torch.Tensor) -> torch.Tensor:
    """NeuS's discrete opacity along rays, as the density that composite_weights turns back into it.

    sdf (R, S) at consecutive samples (_FAR_SDF where not evaluated); α_i = clamp((Φ_i − Φ_i+1) / Φ_i, 0, 1) with
    Φ = sigmoid(sdf / scale) for intervals whose first sample was evaluated, else 0 (an unevaluated sample has no
    colour); the last sample's α = 0 -> σ_i = −log(1 − α_i) / δ_i."""
    phi = torch.sigmoid(sdf / scale)
    nxt = torch.cat([phi[:, 1:], torch.ones_like(phi[:, :1])], 1)
    alpha = ((phi - nxt) / phi.clamp(min=1e-6)).clamp(0.0, 1.0 - 1e-6)
    alpha = torch.where(sdf < _FAR_SDF, alpha, torch.zeros_like(alpha))
    return -torch.log1p(-alpha) / delta.clamp(min=1e-8)
