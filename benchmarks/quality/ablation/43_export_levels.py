"""README ablation row 43: exporter-side levers (iso-level offset, Taubin smoothing) on finished runs, no retraining.
usage: python 43_export_levels.py RESULTS.json OUT.json --workdir SWEEP [--levels 0 0.03 0.06 0.1] [--smooth 0 10 30]
(levels are on -sdf: 0.03 keeps the solid sdf <= -0.03)"""
import argparse, json, time
from pathlib import Path
import torch, trimesh
from dreamlmc.export import density_grid, extract_mesh
from dreamlmc.shapes import metrics as M, world

ap = argparse.ArgumentParser()
ap.add_argument("results"); ap.add_argument("out")
ap.add_argument("--workdir", required=True, help="the bench_quality --workdir holding the runs")
ap.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.03, 0.06, 0.1])
ap.add_argument("--smooth", type=int, nargs="+", default=[0])
a = ap.parse_args()
torch.set_num_threads(1)
runs = json.load(open(a.results))["runs"]
res = {}
for name, r in runs.items():
    t0 = time.time()
    tr = M.load_run(Path(a.workdir) / name)
    cfg = tr.cfg; bound = cfg.renderer.field.bound
    shape = world.parse_prompt(cfg.prompt)["shape"]
    fn, _ = tr.surface()
    grid = density_grid(fn, cfg.export.resolution, bound)
    levels = list(a.levels)
    out = {}
    for lv in levels:
        inside = M.solid_inside_fn(grid, lv, bound)
        # the project's exporter at this level (it samples the same grid again: simple over fast for a diagnostic)
        mesh0 = extract_mesh(fn, lambda p: tr.renderer.field(p)[1], bound=bound, cfg=cfg.export, threshold=lv)
        for it in a.smooth:
            mesh = mesh0.copy()
            if it:
                trimesh.smoothing.filter_taubin(mesh, lamb=0.5, nu=0.53, iterations=it)
            d = M.shape_scores(inside, shape, mesh)
            out[f"{lv:.4f}|{it}"] = dict(iou=d["iou"], nearest=d["nearest"], correct=d["shape_correct"],
                                         hole=d["hole"], chamfer=d["chamfer"], nc=d["normal_consistency"])
    res[name] = dict(prompt=cfg.prompt, seed=r["seed"], levels=levels, v=out)
    print(f"{name[:40]:40s} {time.time()-t0:5.1f}s", " ".join(f"{k}:{d['iou']:.3f}/{d['chamfer']:.3f}/{d['nc']:.3f}"
                                                          for k, d in out.items() if k.endswith('|0') or k.startswith('0.0000')), flush=True)
    json.dump(res, open(a.out, "w"), indent=1)
