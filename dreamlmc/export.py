"""Mesh export: density grid -> marching cubes (automatic threshold) -> floaters removed -> albedo as vertex colours
(or an xatlas UV atlas with a baked texture) -> GLB / OBJ / PLY, +Y up, object centred, scene units.

It takes plain callables (density_fn, albedo_fn: (N, 3) points -> (N,) / (N, 3)), not the renderer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import numpy as np
import torch

from dreamlmc.errors import DreamlmcError
from dreamlmc.io import atomic_write
from dreamlmc.config import spec

Threshold = Union[float, str]


@dataclass
class ExportConfig:
    resolution: int = spec(128, ge=8, le=512)  # density grid cells per axis
    threshold: Any = "auto"  # "auto" (match the renders' silhouettes) or a number (density units)
    min_component_fraction: float = spec(0.05, ge=0.0, le=1.0)  # drop pieces with fewer faces than this fraction of the largest
    texture: bool = False
    texture_size: int = spec(512, ge=16, le=8192)
    max_faces_for_texture: int = spec(20000, ge=100, le=10_000_000)  # decimate above this before UV unwrapping
    format: Literal["glb", "obj", "ply"] = "glb"

    def validate(self):
        t = self.threshold
        ok = t == "auto" or (isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t))
        if not ok:
            raise DreamlmcError(f"config key 'export.threshold' must be auto or a finite number, got {t!r}")


@torch.no_grad()
def density_grid(density_fn: Callable, resolution: int, bound: float, chunk: int = 262144) -> np.ndarray:
    """Sample density at cell centres of a resolution^3 grid over [-bound, bound]^3 -> (R, R, R) [x, y, z]."""
    lin = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution * 2 * bound - bound
    X, Y, Z = torch.meshgrid(lin, lin, lin, indexing="ij")
    pts = torch.stack([X, Y, Z], -1).reshape(-1, 3)
    vals = torch.cat([density_fn(c).float().cpu() for c in pts.split(chunk)])
    return vals.reshape(resolution, resolution, resolution).numpy()


def auto_threshold(grid: np.ndarray, cell: float) -> float:
    """The density level whose solid has the renders' silhouettes.

    Along every axis-aligned line through the grid, a render sees the object where the optical depth exceeds ln 2
    (50 % opacity). The level is chosen so that "the line's maximum density exceeds the level" agrees best with
    that, over all lines of the three axes (median of the tied best levels). This holds for crisp fields and for
    the soft, semi-transparent ones that score distillation often makes, where the density at the 50 %-opacity
    point is far above most of the interior (a fixed fraction of it fragments the mesh)."""
    maxima, opaque = [], []
    for axis in range(3):
        g = np.moveaxis(grid, axis, -1).reshape(-1, grid.shape[axis])
        maxima.append(g.max(1))
        opaque.append(g.sum(1) * cell > np.log(2.0))
    m, o = np.concatenate(maxima), np.concatenate(opaque)
    if not o.any():
        return float(grid.max()) + 1.0  # nothing is opaque: no surface (reported by the caller)
    candidates = np.unique(np.quantile(m[o], np.linspace(0.0, 1.0, 201)))
    candidates = candidates[candidates < m.max()]
    if candidates.size == 0:
        return float(np.median(m[o]))
    below = np.sort(m[~o]) if (~o).any() else np.zeros(0)
    above = np.sort(m[o])
    # agreement = opaque lines above the level + see-through lines at or below it
    agree = (above.size - np.searchsorted(above, candidates, side="right")) + np.searchsorted(below, candidates,
                                                                                              side="right")
    best = candidates[agree == agree.max()]
    return float(np.median(best))


def extract_mesh(density_fn: Callable, albedo_fn: Callable, bound: float = 1.0, cfg: ExportConfig = ExportConfig(),
                 threshold: Optional[Threshold] = None, grid: Optional[np.ndarray] = None):
    """-> trimesh.Trimesh with vertex colours (RGBA uint8), or textured when cfg.texture. grid: density_fn already
    sampled by density_grid at cfg.resolution (a caller that needs the grid too samples it once)."""
    import trimesh
    from skimage.measure import marching_cubes

    if grid is None:
        grid = density_grid(density_fn, cfg.resolution, bound)
    elif grid.shape != (cfg.resolution,) * 3:
        raise ValueError(f"grid of shape {grid.shape} for export resolution {cfg.resolution}")
    thr = cfg.threshold if threshold is None else threshold
    level = auto_threshold(grid, 2 * bound / cfg.resolution) if thr == "auto" else float(thr)
    if not np.isfinite(grid).all():
        raise DreamlmcError("the density grid has non-finite values; the run diverged - resume from an earlier "
                            "checkpoint or lower the learning rate")
    if not (grid.min() < level < grid.max()):
        raise DreamlmcError(f"no surface at density threshold {level:.3g} (grid range {grid.min():.3g}..{grid.max():.3g}):"
                            " the object is empty or fills the box - train more steps or pass --threshold")
    verts, faces, _, _ = marching_cubes(grid, level=level)
    cell = 2 * bound / cfg.resolution
    verts = verts * cell - bound + 0.5 * cell
    # marching_cubes orients faces for increasing values; density grows inwards, so flip to face outwards
    mesh = trimesh.Trimesh(verts, faces[:, ::-1], process=True)
    mesh = remove_floaters(mesh, cfg.min_component_fraction)
    if len(mesh.faces) < 4:
        raise DreamlmcError("the exported mesh is degenerate (fewer than 4 faces); train more steps or lower "
                            "--threshold")
    if cfg.texture:
        return bake_texture(mesh, albedo_fn, cfg)
    with torch.no_grad():
        cols = albedo_fn(torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float32))).clamp(0, 1).cpu().numpy()
    rgba = np.concatenate([cols * 255 + 0.5, np.full((len(cols), 1), 255.0)], 1).astype(np.uint8)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=rgba)
    return mesh


def remove_floaters(mesh, min_fraction: float):
    parts = mesh.split(only_watertight=False)
    if len(parts) <= 1:
        return mesh
    sizes = np.array([len(p.faces) for p in parts])
    keep = [p for p, n in zip(parts, sizes) if n >= min_fraction * sizes.max()]
    import trimesh

    return trimesh.util.concatenate(keep)


def bake_texture(mesh, albedo_fn: Callable, cfg: ExportConfig):
    """UV-unwrap with xatlas (after decimation when large) and bake the albedo into a texture image."""
    import trimesh
    import xatlas
    from PIL import Image

    if len(mesh.faces) > cfg.max_faces_for_texture:
        import fast_simplification

        v, f = fast_simplification.simplify(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces),
                                            target_reduction=1 - cfg.max_faces_for_texture / len(mesh.faces))
        mesh = trimesh.Trimesh(v, f, process=True)
    vmapping, indices, uvs = xatlas.parametrize(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces))
    verts = np.asarray(mesh.vertices)[vmapping]
    S = cfg.texture_size
    pos, filled = rasterize_uv(uvs, indices, verts, S)
    tex = np.ones((S, S, 3), np.float32)
    if filled.any():
        with torch.no_grad():
            tex[filled] = albedo_fn(torch.from_numpy(pos[filled].astype(np.float32))).clamp(0, 1).cpu().numpy()
    tex = dilate_texture(tex, filled)
    image = Image.fromarray((tex[::-1] * 255 + 0.5).astype(np.uint8))  # glTF's v runs top to bottom
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=image, metallicFactor=0.0, roughnessFactor=1.0)
    visual = trimesh.visual.TextureVisuals(uv=uvs, material=material)
    return trimesh.Trimesh(verts, indices, visual=visual, process=False)


def rasterize_uv(uvs: np.ndarray, faces: np.ndarray, verts: np.ndarray, size: int):
    """Texel centres -> 3D positions by barycentric interpolation over each UV triangle.

    Returns pos (S, S, 3) and filled (S, S) bool; row 0 is v = 0."""
    pos = np.zeros((size, size, 3), np.float64)
    filled = np.zeros((size, size), bool)
    uv = uvs * size - 0.5
    for f in faces:
        a, b, c = uv[f]
        lo = np.floor(np.minimum(np.minimum(a, b), c)).astype(int).clip(0, size - 1)
        hi = np.ceil(np.maximum(np.maximum(a, b), c)).astype(int).clip(0, size - 1)
        xs, ys = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
        p = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64)
        v0, v1, v2 = b - a, c - a, p - a
        den = v0[0] * v1[1] - v1[0] * v0[1]
        if abs(den) < 1e-12:
            continue
        w1 = (v2[:, 0] * v1[1] - v1[0] * v2[:, 1]) / den
        w2 = (v0[0] * v2[:, 1] - v2[:, 0] * v0[1]) / den
        w0 = 1 - w1 - w2
        inside = (w0 >= -1e-3) & (w1 >= -1e-3) & (w2 >= -1e-3)
        if not inside.any():
            continue
        px, py = xs.ravel()[inside], ys.ravel()[inside]
        P = verts[f]
        pos[py, px] = w0[inside, None] * P[0] + w1[inside, None] * P[1] + w2[inside, None] * P[2]
        filled[py, px] = True
    return pos, filled


def dilate_texture(tex: np.ndarray, filled: np.ndarray, iterations: int = 4) -> np.ndarray:
    """Grow filled texels into the empty gutter so bilinear lookups at chart borders do not bleed white."""
    from scipy.ndimage import binary_dilation, distance_transform_edt

    if not filled.any():
        return tex
    _, (iy, ix) = distance_transform_edt(~filled, return_indices=True)
    grown = binary_dilation(filled, iterations=iterations)
    out = tex.copy()
    out[grown & ~filled] = tex[iy[grown & ~filled], ix[grown & ~filled]]
    return out


def write_mesh(mesh, path: Path, fmt: str = "glb") -> None:
    """Atomically write the mesh; GLB embeds vertex colours or the baked texture."""
    if fmt not in ("glb", "obj", "ply"):
        raise DreamlmcError(f"unknown mesh format {fmt!r}; use glb, obj or ply")
    data = mesh.export(file_type=fmt)
    if isinstance(data, str):
        data = data.encode()
    atomic_write(Path(path), lambda p: p.write_bytes(data))
