"""README ablation row 56: how much IoU a uniform rescaling of each finished run's solid would give, the factor
picked per run from the ground truth (an oracle: an upper bound on what a size-only correction can buy).
usage: python 56_oracle_scale.py RESULTS.json OUT.json --workdir SWEEP [--scales 0.7 ... 1.2]
(the solid is scaled about the origin, where the world's objects are centred; IoU best over yaw as in evaluate_run,
on 30,000 points and a 10-degree yaw step, so its s = 1 column differs from the stored IoU by sampling noise)"""
import argparse, json, time
from pathlib import Path
import numpy as np, torch
from dreamlmc.shapes import metrics as M, world

ap = argparse.ArgumentParser()
ap.add_argument("results"); ap.add_argument("out")
ap.add_argument("--workdir", required=True, help="the bench_quality --workdir holding the runs")
ap.add_argument("--scales", type=float, nargs="+", default=[0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2])
a = ap.parse_args()
torch.set_num_threads(1)
res = {}
for name, r in json.load(open(a.results))["runs"].items():
    t0 = time.time()
    tr = M.load_run(Path(a.workdir) / name)
    cfg = tr.cfg
    shape = world.parse_prompt(cfg.prompt)["shape"]
    inside = M.run_solid(tr)
    by_scale = {s: M.best_yaw_iou(lambda p, s=s: inside(p / s), shape, n=30_000, yaw_step=10.0)[0] for s in a.scales}
    best = max(by_scale, key=by_scale.get)
    res[name] = {"prompt": cfg.prompt, "seed": r["seed"], "iou_stored": r["iou"], "by_scale": by_scale,
                 "best_scale": best, "best_iou": by_scale[best]}
    print(f"{cfg.prompt:18s} seed {r['seed']}: stored {r['iou']:.3f}, s=1 {by_scale[1.0]:.3f}, "
          f"best x{best} {by_scale[best]:.3f} ({time.time() - t0:.0f} s)", flush=True)
json.dump(res, open(a.out, "w"), indent=1)
at1 = np.array([v["by_scale"][1.0] for v in res.values()]); best = np.array([v["best_iou"] for v in res.values()])
print(f"mean IoU at scale 1: {at1.mean():.3f}; at each run's best scale: {best.mean():.3f} "
      f"(+{(best - at1).mean():.3f} ± {(best - at1).std(ddof=1) / np.sqrt(len(best)):.3f})")
for p in dict.fromkeys(v["prompt"] for v in res.values()):
    rows = [v for v in res.values() if v["prompt"] == p]
    print(f"  {p:18s} {np.mean([v['by_scale'][1.0] for v in rows]):.3f} -> {np.mean([v['best_iou'] for v in rows]):.3f}"
          f"  scales {' '.join(str(v['best_scale']) for v in rows)}")
