"""README ablation row 43: exporter-side levers (iso-level offset, Taubin smoothing) on finished runs, no retraining.
usage: python 43_export_levels.py RESULTS.json OUT.json --workdir SWEEP [--levels 0 0.03 0.06 0.1] [--smooth 0 10 30]
(levels are on -sdf: 0.03 keeps the solid sdf <= -0.03)"""
import argparse, json, sys, time
from pathlib import Path
import numpy as np, torch, trimesh
from skimage.measure import marching_cubes
from dreamlmc.export import density_grid, remove_floaters, auto_threshold
from dreamlmc.shapes import metrics as M, world

ap = argparse.ArgumentParser()
ap.add_argument("results"); ap.add_argument("out")
ap.add_argument("--workdir", required=True, help="the bench_quality --workdir holding the runs")
ap.add_argument("--levels", type=float, nargs="+", default=[-0.01, 0.0, 0.01, 0.02, 0.03])
ap.add_argument("--smooth", type=int, nargs="+", default=[0, 5, 10, 20])
ap.add_argument("--auto", action="store_true", help="also the VolSDF density's auto threshold")
a = ap.parse_args()
torch.set_num_threads(1)
runs = json.load(open(a.results))["runs"]
res = {}
for name, r in runs.items():
    t0 = time.time()
    tr = M.load_run(Path(a.workdir) / name)
    cfg = tr.cfg; bound = cfg.renderer.field.bound; R = cfg.export.resolution; cell = 2 * bound / R
    shape = world.parse_prompt(cfg.prompt)["shape"]
    fn, _ = tr.surface()
    grid = density_grid(fn, R, bound)
    levels = list(a.levels)
    if a.auto:
        f = tr.renderer.field.eval()
        dg = density_grid(lambda p: f.density(p), R, bound)
        lv = auto_threshold(dg, cell)
        # the -sdf value at that density level: map through the grid's monotone relation (median over the band)
        band = np.abs(dg - lv) < 0.05 * lv
        levels.append(float(np.median(grid[band])) if band.any() else 0.0)
    out = {}
    for lv in levels:
        inside = M.solid_inside_fn(grid, lv, bound)
        best, yaw = M.best_yaw_iou(inside, shape, n=60_000, yaw_step=5.0)
        nearest, _ = M.nearest_shape(inside, n=40_000, yaw_step=5.0)
        hole = M.has_hole(inside) if shape == "torus" else None
        v, fc, _, _ = marching_cubes(grid, level=lv)
        v = v * cell - bound + 0.5 * cell
        mesh0 = remove_floaters(trimesh.Trimesh(v, fc[:, ::-1], process=True), cfg.export.min_component_fraction)
        gt, gtn = M.surface_points_of_shape(shape, 5000, yaw, normals=True)
        for it in a.smooth:
            mesh = mesh0.copy()
            if it:
                trimesh.smoothing.filter_taubin(mesh, lamb=0.5, nu=0.53, iterations=it)
            pts, fi = trimesh.sample.sample_surface(mesh, 5000, seed=0)
            pts = np.asarray(pts, np.float32)
            out[f"{lv:.4f}|{it}"] = dict(iou=best, nearest=nearest, correct=float(nearest == shape), hole=hole,
                                         chamfer=M.chamfer(pts, gt),
                                         nc=M.normal_consistency(pts, np.asarray(mesh.face_normals)[fi], gt, gtn))
    res[name] = dict(prompt=cfg.prompt, seed=r["seed"], levels=levels, v=out)
    print(f"{name[:40]:40s} {time.time()-t0:5.1f}s", " ".join(f"{k}:{d['iou']:.3f}/{d['chamfer']:.3f}/{d['nc']:.3f}"
                                                          for k, d in out.items() if k.endswith('|0') or k.startswith('0.0000')), flush=True)
    json.dump(res, open(a.out, "w"), indent=1)
