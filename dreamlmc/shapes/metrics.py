"""Quality metrics against the built-in world's ground truth (used by tools/bench_quality.py).

Geometry: volumetric IoU with the analytic shape (best over yaw, which the prior does not fix) and symmetric
Chamfer distance; colour: CIELAB ΔE of the albedo against the prompt's; saturation and sharpness of renders
relative to ground-truth renders of the same cameras; diversity across fixed-ε seeds.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from dreamlmc.shapes import world


def rotate_y(points: torch.Tensor, degrees: float) -> torch.Tensor:
    a = np.deg2rad(degrees)
    c, s = float(np.cos(a)), float(np.sin(a))
    R = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=points.dtype)
    return points @ R.T


def sample_box(n: int, bound: float = 1.0, seed: int = 0) -> torch.Tensor:
    return (torch.rand(n, 3, generator=torch.Generator().manual_seed(seed)) * 2 - 1) * bound


def iou(pred_inside: np.ndarray, true_inside: np.ndarray) -> float:
    inter = np.logical_and(pred_inside, true_inside).sum()
    union = np.logical_or(pred_inside, true_inside).sum()
    return float(inter / union) if union else 1.0


def best_yaw_iou(pred_inside_fn: Callable[[torch.Tensor], np.ndarray], shape: str, n: int = 100_000,
                 yaw_step: float = 5.0, seed: int = 0) -> Tuple[float, float]:
    """IoU of a predicted occupancy with the analytic shape rotated about +Y; -> (best IoU, its yaw in degrees)."""
    pts = sample_box(n, seed=seed)
    pred = pred_inside_fn(pts)
    best = (-1.0, 0.0)
    for yaw in np.arange(0.0, 360.0, yaw_step):
        true = (world.sdf(shape, rotate_y(pts, -yaw)) < 0).numpy()
        v = iou(pred, true)
        if v > best[0]:
            best = (v, float(yaw))
    return best


def solid_inside_fn(grid, level: float, bound: float = 1.0) -> Callable[[torch.Tensor], np.ndarray]:
    """Inside test from a density grid (R, R, R) [x, y, z] over [-bound, bound]^3: cells above the iso-level, with
    every cavity not connected to the outside filled. A NeRF trained by score distillation is often hollow (only
    its visible surface is constrained); the object a viewer sees is the filled solid."""
    from scipy.ndimage import binary_fill_holes

    solid = binary_fill_holes(grid > level)
    r = grid.shape[0]

    def fn(pts: torch.Tensor) -> np.ndarray:
        idx = np.floor((pts.numpy() / bound * 0.5 + 0.5) * r).astype(int)
        ok = ((idx >= 0) & (idx < r)).all(-1)
        idx = np.clip(idx, 0, r - 1)
        return ok & solid[idx[:, 0], idx[:, 1], idx[:, 2]]

    return fn


def mesh_inside_fn(mesh) -> Callable[[torch.Tensor], np.ndarray]:
    """Inside test of a (closed) trimesh by the generalised winding number's sign, via ray parity."""
    def fn(pts: torch.Tensor) -> np.ndarray:
        return np.asarray(mesh.contains(pts.numpy().astype(np.float64)))

    return fn


def sdf_normals(shape: str, points: np.ndarray, yaw: float = 0.0, eps: float = 1e-3) -> np.ndarray:
    """Unit outward normals (N, 3) of the analytic shape rotated by `yaw` about +Y, at points (N, 3) on or near its
    surface (central differences of the exact SDF)."""
    p = rotate_y(torch.from_numpy(np.asarray(points, np.float32)), -yaw)
    offs = torch.eye(3) * eps
    g = torch.stack([world.sdf(shape, p + offs[k]) - world.sdf(shape, p - offs[k]) for k in range(3)], -1)
    g = rotate_y(torch.nn.functional.normalize(g, dim=-1), yaw)
    return g.numpy()


def surface_points_of_shape(shape: str, n: int, yaw: float = 0.0, seed: int = 0, normals: bool = False):
    """Points on the analytic surface (marching cubes of the SDF at 128^3, then area-uniform samples), rotated by
    `yaw` about +Y; with normals=True also their exact unit normals -> (points, normals)."""
    import trimesh
    from skimage.measure import marching_cubes

    r = 128
    lin = (torch.arange(r, dtype=torch.float32) + 0.5) / r * 2 - 1
    X, Y, Z = torch.meshgrid(lin, lin, lin, indexing="ij")
    sdf = world.sdf(shape, torch.stack([X, Y, Z], -1).reshape(-1, 3)).reshape(r, r, r).numpy()
    v, f, _, _ = marching_cubes(sdf, 0.0)
    v = v * (2 / r) - 1 + 1 / r
    pts, _ = trimesh.sample.sample_surface(trimesh.Trimesh(v, f), n, seed=seed)
    pts = rotate_y(torch.from_numpy(np.asarray(pts, np.float32)), yaw).numpy()
    return (pts, sdf_normals(shape, pts, yaw)) if normals else pts


def normal_consistency(pred_points: np.ndarray, pred_normals: np.ndarray, gt_points: np.ndarray,
                       gt_normals: np.ndarray) -> float:
    """Mean |cos| between each predicted surface point's normal and the ground-truth normal at its nearest
    ground-truth point (1 = every facet parallel to the true surface; ~0.5 for random orientations)."""
    from scipy.spatial import cKDTree

    _, idx = cKDTree(gt_points).query(pred_points)
    cos = np.abs((np.asarray(pred_normals) * np.asarray(gt_normals)[idx]).sum(-1))
    return float(cos.mean())


def nearest_shape(inside_fn: Callable[[torch.Tensor], np.ndarray], n: int = 40_000, yaw_step: float = 5.0,
                  seed: int = 0) -> Tuple[str, Dict[str, float]]:
    """Which world shape an occupancy is nearest to: IoU against every shape (best over yaw) -> (name, scores)."""
    scores = {s: best_yaw_iou(inside_fn, s, n=n, yaw_step=yaw_step, seed=seed)[0] for s in world.SHAPES}
    return max(scores, key=scores.get), scores


def has_hole(inside_fn: Callable[[torch.Tensor], np.ndarray], radius: float = 0.12, n: int = 4000,
             seed: int = 0) -> bool:
    """Whether the vertical column |(x, z)| < radius through the centre is (at least 95 %) empty: a torus seen from
    above shows its hole; a disc or a blob does not."""
    g = torch.Generator().manual_seed(seed)
    r = radius * torch.sqrt(torch.rand(n, generator=g))
    a = 2 * np.pi * torch.rand(n, generator=g)
    y = torch.rand(n, generator=g) * 2 - 1
    pts = torch.stack([r * torch.cos(a), y, r * torch.sin(a)], -1)
    return float(np.mean(inside_fn(pts))) < 0.05


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Chamfer distance: mean nearest-neighbour distance a->b plus b->a (scene units)."""
    from scipy.spatial import cKDTree

    return float(cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def chamfer_floor(shape: str, n: int = 5000) -> float:
    """What a perfect mesh scores in `chamfer` with n points a side: the ground truth against a second, independent
    sampling of itself (about 0.025-0.035 at n = 5000: the nearest sample is never exactly on top)."""
    a = np.asarray(surface_points_of_shape(shape, n, seed=0), np.float32)
    b = np.asarray(surface_points_of_shape(shape, n, seed=1), np.float32)
    return chamfer(a, b)


def delta_e(rgb_a: np.ndarray, rgb_b: np.ndarray) -> np.ndarray:
    """CIE76 ΔE between RGB colours in [0, 1] (..., 3), both read as sRGB."""
    from skimage.color import rgb2lab

    la = rgb2lab(np.clip(np.asarray(rgb_a, np.float64), 0, 1).reshape(-1, 1, 3))
    lb = rgb2lab(np.clip(np.asarray(rgb_b, np.float64), 0, 1).reshape(-1, 1, 3))
    return np.linalg.norm(la - lb, axis=-1).reshape(np.shape(rgb_a)[:-1])


def saturation(images: torch.Tensor, mask: torch.Tensor = None) -> float:
    """Mean HSV saturation of (B, 3, H, W) images in [0, 1], over mask (B, 1, H, W) > 0.5 when given."""
    mx, mn = images.max(1).values, images.min(1).values
    s = torch.where(mx > 1e-6, (mx - mn) / mx.clamp(min=1e-6), torch.zeros_like(mx))
    if mask is not None:
        m = mask[:, 0] > 0.5
        return float(s[m].mean()) if m.any() else 0.0
    return float(s.mean())


def sharpness(images: torch.Tensor) -> float:
    """Variance of the Laplacian of the grey image, averaged over the batch (higher = sharper)."""
    grey = images.mean(1, keepdim=True)
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    lap = torch.nn.functional.conv2d(grey, k)
    return float(lap.var(dim=(1, 2, 3)).mean())


def pairwise_mean(items: Sequence, dist: Callable) -> float:
    d = [dist(items[i], items[j]) for i in range(len(items)) for j in range(i + 1, len(items))]
    return float(np.mean(d)) if d else 0.0


def render_diversity(renders: Sequence[torch.Tensor]) -> float:
    """Mean pairwise mean-absolute pixel difference between runs' renders of the same cameras."""
    return pairwise_mean(list(renders), lambda a, b: float((a - b).abs().mean()))


def summarise(values: Dict[str, Sequence[float]]) -> Dict[str, float]:
    return {k: float(np.mean(v)) for k, v in values.items() if len(v)}


# ------------------------------------------------------------------------------------------------ a whole run

CHROMATIC_SATURATION = 0.2  # ground-truth saturation above which a saturation ratio is reported


def load_run(run):
    """A finished (or checkpointed) run folder's trainer with its last checkpoint loaded."""
    from dreamlmc.config import load_yaml
    from dreamlmc.trainer import Trainer, resolve_config

    tr = Trainer(resolve_config([load_yaml(run / "config.yaml")], []), run, progress=False)
    tr.load_checkpoint()
    return tr


def shape_scores(inside: Callable[[torch.Tensor], np.ndarray], shape: str, mesh) -> Dict:
    """The geometry metrics of an asset against the world shape it should be: IoU (best over yaw) of its solid
    (inside) and the shape it is nearest to, whether a torus's hole is open; Chamfer distance, normal consistency
    and extents (relative to ground truth) of its mesh (a trimesh.Trimesh), sampled at 5,000 surface points."""
    import trimesh

    nearest, by_shape = nearest_shape(inside, n=40_000, yaw_step=5.0)
    best_iou, yaw = best_yaw_iou(inside, shape, n=60_000, yaw_step=5.0)
    pred_pts, faces = trimesh.sample.sample_surface(mesh, 5000, seed=0)
    pred_pts = np.asarray(pred_pts, np.float32)
    gt_pts, gt_n = surface_points_of_shape(shape, 5000, yaw, normals=True)
    extent = np.asarray(mesh.bounds[1] - mesh.bounds[0]) / np.maximum(1e-6, gt_pts.max(0) - gt_pts.min(0))
    return {"iou": best_iou, "yaw": yaw, "nearest": nearest, "shape_correct": float(nearest == shape),
            "iou_by_shape": by_shape, "hole": has_hole(inside) if shape == "torus" else None,
            "chamfer": chamfer(pred_pts, gt_pts),
            "normal_consistency": normal_consistency(pred_pts, np.asarray(mesh.face_normals)[faces], gt_pts, gt_n),
            "extent_ratio": extent.round(3).tolist()}


def export_grid(tr) -> np.ndarray:
    """A loaded run's surface field sampled on the exporter's grid (what export_mesh and run_solid both read)."""
    from dreamlmc.export import density_grid

    fn, _ = tr.surface()
    with torch.no_grad():
        return density_grid(fn, tr.cfg.export.resolution, tr.cfg.renderer.field.bound)


def run_solid(tr, grid: Optional[np.ndarray] = None) -> Callable[[torch.Tensor], np.ndarray]:
    """The inside test of a loaded run's asset: its field sampled on the export grid (export_grid, or the one
    given), above the exporter's iso-level, enclosed cavities filled (what evaluate_run scores)."""
    from dreamlmc.export import auto_threshold

    cfg = tr.cfg
    bound = cfg.renderer.field.bound
    _, level = tr.surface()
    grid = export_grid(tr) if grid is None else grid
    if level == "auto":
        level = auto_threshold(grid, 2 * bound / cfg.export.resolution)
    return solid_inside_fn(grid, float(level), bound)


def evaluate_run(run, export: bool = True) -> Dict:
    """Every quality metric of a run of a built-in world prompt against its ground truth.

    IoU (best over yaw) of the asset's solid (the field above the exported mesh's iso-level, enclosed cavities
    filled) and the world shape it is nearest to; Chamfer distance and normal consistency of the exported mesh;
    for tori, whether the hole is open; extents relative to ground truth; ΔE of the vertex colours against the
    prompt's albedo; saturation and sharpness of 8 rendered views relative to ground-truth renders of the same
    cameras; the run's training seconds. export: re-export model.glb with this version's exporter first."""
    from pathlib import Path

    import trimesh

    from dreamlmc.cameras import orbit_cameras
    from dreamlmc.shapes.render import render_shapes

    run = Path(run)
    tr = load_run(run)
    cfg = tr.cfg
    parts = world.parse_prompt(cfg.prompt)
    shape, colour = parts["shape"], parts["colour"]
    if shape is None or colour is None:
        raise ValueError(f"{cfg.prompt!r} does not name both a shape and a colour of the built-in world")
    grid = export_grid(tr)
    if export or not (run / "model.glb").exists():
        tr.export_mesh(run / "model.glb", cfg.export, grid=grid)
    mesh = trimesh.load(run / "model.glb", force="mesh")
    scores = shape_scores(run_solid(tr, grid), shape, mesh)
    vcols = np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0
    de = float(delta_e(vcols, np.broadcast_to(np.array(world.COLOURS[colour]), vcols.shape)).mean())
    views = tr.render_views(8, 64)
    cams = orbit_cameras(cfg.camera, 8, 64, 64)
    gt = render_shapes([shape] * 8, torch.tensor([world.COLOURS[colour]] * 8), cams)
    sat, sat_gt = saturation(views["rgb"], views["opacity"]), saturation(gt["rgb"], gt["mask"])
    seconds = None
    if (run / "DONE").exists():
        done = (run / "DONE").read_text().split()
        seconds = float(done[done.index("in") + 1]) if "in" in done else None
    # A ratio is meaningless for white and black objects (ground-truth saturation ~0): those get the difference only.
    return {**scores, "delta_e": de,
            "saturation": sat, "saturation_gt": sat_gt, "saturation_delta": sat - sat_gt,
            "saturation_ratio": sat / sat_gt if sat_gt >= CHROMATIC_SATURATION else None,
            "sharpness_ratio": sharpness(views["rgb"]) / max(1e-9, sharpness(gt["rgb"])), "seconds": seconds}
