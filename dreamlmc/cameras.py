"""Camera sampling: random training views, orbit (turntable) views, and their rays.

Conventions (used everywhere in dreamlmc):
- World: right-handed, +Y up, the object centred at the origin, "front" faces +Z (azimuth 0).
- Spherical camera position: x = r cos(el) sin(az), y = r sin(el), z = r cos(el) cos(az); angles in degrees
  in the config and in :class:`CameraBatch`, radians nowhere outside this module.
- Camera-to-world matrices use the OpenGL convention: the camera looks along its -Z axis, +Y is up.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from dreamlmc.config import spec


@dataclass
class CameraConfig:
    """Ranges of the random training cameras (degrees, scene units)."""

    elevation_range: Tuple[float, float] = spec((-10.0, 45.0), ge=-90.0, le=90.0, ordered=True)
    azimuth_range: Tuple[float, float] = spec((-180.0, 180.0), ge=-360.0, le=360.0, ordered=True)
    # The world's objects are bounded by radius ~0.9, so the DreamFusion ranges (radius 1.5-2, object radius ~0.5)
    # are scaled here to keep the whole object in frame.
    radius_range: Tuple[float, float] = spec((2.0, 2.6), gt=0.0, le=100.0, ordered=True)
    fovy_range: Tuple[float, float] = spec((45.0, 60.0), gt=0.0, lt=180.0, ordered=True)
    jitter: float = spec(0.02, ge=0.0, le=1.0)  # std of the look-at point around the origin, scene units
    light_jitter: float = spec(0.5, ge=0.0, le=100.0)  # std of the point light around the camera position, scene units
    stratified: bool = True  # azimuths spread evenly within a batch, each jittered in its own bin
    # (azimuth, elevation) from a 2D low-discrepancy sequence over the steps (Roberts' R2) instead of independent
    # draws: every stretch of training views the object evenly from all sides (overrides `stratified`; the white
    # cube flattens, README row 66)
    sequence: bool = False
    # Progressive views (stable-dreamfusion's --progressive_view, threestudio's progressive_until): the azimuth range
    # starts at progressive_init of its width, centred on its middle (the front), and widens linearly to the full
    # range at this fraction of training; None: the full range throughout
    progressive_until: Optional[float] = spec(None, gt=0.0, le=1.0)
    progressive_init: float = spec(0.2, ge=0.0, le=1.0)
    # Orbit (turntable / preview / evaluation) cameras
    # View words in 45° bins (front / three-quarter / side / back) instead of DreamFusion's 90° ones: for a prior
    # trained with them (tools/train_prior.py --fine-views); the built-in prior and the real backends know the 90° ones
    fine_views: bool = False
    # Overhead views: each training view is, with this probability, drawn at an elevation in overhead_range instead
    # (above 60° it carries DreamFusion's "overhead" view word). For a prior whose data reach that high
    # (tools/make_shapes_data.py --elevation -10 85); 0: none, and no extra random draws
    overhead_prob: float = spec(0.0, ge=0.0, le=1.0)
    overhead_range: Tuple[float, float] = spec((60.0, 85.0), ge=-90.0, le=89.0, ordered=True)
    orbit_elevation: float = spec(15.0, ge=-90.0, le=90.0)
    orbit_radius: float = spec(2.5, gt=0.0, le=100.0)
    orbit_fovy: float = spec(50.0, gt=0.0, lt=180.0)


@dataclass
class CameraBatch:
    """A batch of pinhole cameras with their rays.

    rays_o, rays_d: (B, H, W, 3) origins and unit directions in world space.
    c2w: (B, 4, 4); elevation, azimuth: (B,) degrees; radius: (B,); fovy: (B,) degrees;
    light_pos: (B, 3) world position of the point light; views: B labels in world.VIEWS.
    """

    rays_o: torch.Tensor
    rays_d: torch.Tensor
    c2w: torch.Tensor
    elevation: torch.Tensor
    azimuth: torch.Tensor
    radius: torch.Tensor
    fovy: torch.Tensor
    light_pos: torch.Tensor
    views: List[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return self.rays_o.shape[1]

    @property
    def width(self) -> int:
        return self.rays_o.shape[2]

    @property
    def position(self) -> torch.Tensor:
        return self.c2w[:, :3, 3]

    def to(self, device) -> "CameraBatch":
        t = {k: getattr(self, k).to(device) for k in
             ("rays_o", "rays_d", "c2w", "elevation", "azimuth", "radius", "fovy", "light_pos")}
        return CameraBatch(views=list(self.views), **t)


OVERHEAD_ELEVATION = 60.0  # degrees: above it a view carries DreamFusion's "overhead" word


def view_label(elevation: float, azimuth: float, overhead_threshold: float = OVERHEAD_ELEVATION,
               fine: bool = False) -> str:
    """DreamFusion's view-dependent prompt label for one camera (degrees): front / side / back in 90° bins.

    fine: 45° bins, front / three-quarter / side / three-quarter / back, so that a label tells a cube's or a
    pyramid's face-on views (front, side, back) from its corner-on ones (three-quarter); in 90° bins every label
    spans the whole 90° period of their appearance."""
    if elevation > overhead_threshold:
        return "overhead"
    a = abs((azimuth + 180.0) % 360.0 - 180.0)  # wrap to [0, 180]
    if fine:
        if 22.5 <= a < 67.5 or 112.5 < a <= 157.5:
            return "three-quarter"
        return "front" if a < 22.5 else "back" if a > 157.5 else "side"
    if a < 45.0:
        return "front"
    if a > 135.0:
        return "back"
    return "side"


def view_words(cfg: CameraConfig) -> List[str]:
    """Every view word that cameras drawn from cfg can carry (for checking a prior's vocabulary before training)."""
    words = ["front", "three-quarter", "side", "back"] if cfg.fine_views else ["front", "side", "back"]
    high = max(cfg.elevation_range[1], cfg.overhead_range[1] if cfg.overhead_prob > 0.0 else -90.0)
    return words + (["overhead"] if high > OVERHEAD_ELEVATION else [])


def spherical_to_position(elevation: torch.Tensor, azimuth: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """(B,) degrees, degrees, scene units -> (B, 3) positions."""
    el, az = torch.deg2rad(elevation), torch.deg2rad(azimuth)
    return torch.stack([radius * torch.cos(el) * torch.sin(az), radius * torch.sin(el),
                        radius * torch.cos(el) * torch.cos(az)], dim=-1)


def look_at(eye: torch.Tensor, target: torch.Tensor, up: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, 3) eyes and targets -> (B, 4, 4) OpenGL camera-to-world matrices."""
    if up is None:
        up = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype, device=eye.device).expand_as(eye)
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.nn.functional.normalize(torch.cross(forward, up, dim=-1), dim=-1)
    true_up = torch.cross(right, forward, dim=-1)
    c2w = torch.eye(4, dtype=eye.dtype, device=eye.device).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, true_up, -forward, eye
    return c2w


def generate_rays(c2w: torch.Tensor, fovy: torch.Tensor, height: int, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre rays of pinhole cameras.

    c2w: (B, 4, 4); fovy: (B,) degrees -> rays_o, rays_d: (B, H, W, 3), rays_d unit length.
    """
    dev, dt = c2w.device, c2w.dtype
    focal = 0.5 * height / torch.tan(0.5 * torch.deg2rad(fovy))  # (B,) pixels
    j, i = torch.meshgrid(torch.arange(height, device=dev, dtype=dt) + 0.5,
                          torch.arange(width, device=dev, dtype=dt) + 0.5, indexing="ij")
    x = (i - 0.5 * width)[None] / focal[:, None, None]
    y = -(j - 0.5 * height)[None] / focal[:, None, None]
    dirs = torch.stack([x, y, -torch.ones_like(x)], dim=-1)  # (B, H, W, 3) camera space
    rays_d = torch.einsum("bij,bhwj->bhwi", c2w[:, :3, :3], dirs)
    rays_d = torch.nn.functional.normalize(rays_d, dim=-1)
    rays_o = c2w[:, None, None, :3, 3].expand_as(rays_d)
    return rays_o, rays_d


def _make_batch(elevation, azimuth, radius, fovy, target, light_pos, height, width, fine_views=False) -> CameraBatch:
    eye = spherical_to_position(elevation, azimuth, radius)
    c2w = look_at(eye + target, target)
    rays_o, rays_d = generate_rays(c2w, fovy, height, width)
    views = [view_label(float(e), float(a), fine=fine_views) for e, a in zip(elevation, azimuth)]
    return CameraBatch(rays_o, rays_d, c2w, elevation, azimuth, radius, fovy, light_pos, views)


# Roberts' R2 sequence: frac(k / g, k / g^2) with g the plastic number, evenly spread in 2D for any run of k
_PLASTIC = 1.324717957244746
R2 = torch.tensor([1.0 / _PLASTIC, 1.0 / _PLASTIC ** 2], dtype=torch.float64)


class CameraSampler:
    """Random training cameras, reproducible from a seed (its own generator, so other RNG use cannot shift it)."""

    def __init__(self, cfg: CameraConfig, height: int, width: int, seed: int = 0):
        self.cfg, self.height, self.width = cfg, height, width
        self.generator = torch.Generator().manual_seed(seed)
        self.offset = torch.rand(2, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
        self.calls = 0  # cameras drawn so far (the sequence's index)

    def _uniform(self, n: int, lo_hi) -> torch.Tensor:
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(n, generator=self.generator)

    def azimuth_range(self, progress: float = 1.0) -> Tuple[float, float]:
        """The azimuths sampled at this fraction of training (narrower early with progressive views)."""
        lo, hi = self.cfg.azimuth_range
        until = self.cfg.progressive_until
        if until is None:
            return lo, hi
        init = self.cfg.progressive_init
        half = 0.5 * (hi - lo) * (init + (1.0 - init) * min(1.0, max(0.0, progress) / until))
        mid = 0.5 * (lo + hi)
        return mid - half, mid + half

    def sample(self, batch_size: int = 1, progress: float = 1.0) -> CameraBatch:
        """batch_size random cameras; progress (fraction of training) narrows the azimuths with progressive views."""
        c, g = self.cfg, self.generator
        elevation = self._uniform(batch_size, c.elevation_range)
        lo, hi = self.azimuth_range(progress)
        if c.sequence:
            k = torch.arange(self.calls, self.calls + batch_size, dtype=torch.float64)[:, None]
            u = ((self.offset + k * R2) % 1.0).float()
            self.calls += batch_size
            azimuth = lo + (hi - lo) * u[:, 0]
            elo, ehi = c.elevation_range
            elevation = elo + (ehi - elo) * u[:, 1]
        elif c.stratified:
            bins = (torch.arange(batch_size) + torch.rand(batch_size, generator=g)) / batch_size
            azimuth = lo + (hi - lo) * ((bins + torch.rand(1, generator=g)) % 1.0)
        else:
            azimuth = self._uniform(batch_size, c.azimuth_range)
        if c.overhead_prob > 0.0:
            above = torch.rand(batch_size, generator=g) < c.overhead_prob
            elevation = torch.where(above, self._uniform(batch_size, c.overhead_range), elevation)
        radius = self._uniform(batch_size, c.radius_range)
        fovy = self._uniform(batch_size, c.fovy_range)
        target = c.jitter * torch.randn(batch_size, 3, generator=g)
        eye = spherical_to_position(elevation, azimuth, radius) + target
        light_pos = eye + c.light_jitter * torch.randn(batch_size, 3, generator=g)
        return _make_batch(elevation, azimuth, radius, fovy, target, light_pos, self.height, self.width,
                           self.cfg.fine_views)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "calls": self.calls, "offset": self.offset.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.calls = int(state.get("calls", 0))
        if "offset" in state:
            self.offset = state["offset"].clone().double()


def orbit_cameras(cfg: CameraConfig, n: int, height: int, width: int, elevation: Optional[float] = None,
                  radius: Optional[float] = None, start_azimuth: float = 0.0) -> CameraBatch:
    """n cameras evenly spaced in azimuth on a circle (turntables, previews, evaluation); light at the camera."""
    el = torch.full((n,), cfg.orbit_elevation if elevation is None else elevation)
    az = start_azimuth + torch.arange(n, dtype=torch.float32) * (360.0 / n)
    az = (az + 180.0) % 360.0 - 180.0
    r = torch.full((n,), cfg.orbit_radius if radius is None else radius)
    fovy = torch.full((n,), cfg.orbit_fovy)
    eye = spherical_to_position(el, az, r)
    return _make_batch(el, az, r, fovy, torch.zeros(n, 3), eye.clone(), height, width, cfg.fine_views)
