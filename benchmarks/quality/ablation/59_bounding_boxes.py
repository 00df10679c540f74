"""Per stored run: the solid's bounding box against the ground truth's (where the extra height is). Usage: python 59_bounding_boxes.py RESULTS.json [RESULTS.json ...] OUT.json (runs in ~/.cache/dreamlmc/sweep)."""
import json, sys
from pathlib import Path
import numpy as np, torch
from dreamlmc.shapes import world
from dreamlmc.shapes.metrics import load_run, run_solid
torch.set_num_threads(1)
out = {}
n = 96
ax = np.linspace(-1, 1, n)
P = torch.tensor(np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3), dtype=torch.float32)
for f in sys.argv[1:-1]:
    res = json.load(open(f))
    for key, r in res["runs"].items():
        run = Path("/root/.cache/dreamlmc/sweep") / key
        tr = load_run(run); cfg = tr.cfg
        shape = world.parse_prompt(cfg.prompt)["shape"]
        inside = np.asarray(run_solid(tr)(P)).reshape(-1)
        gt = (world.sdf(shape, P) <= 0).numpy().reshape(-1)
        def bb(m):
            p = P.numpy()[m.astype(bool)]
            return p.min(0).round(3).tolist(), p.max(0).round(3).tolist(), p.mean(0).round(3).tolist()
        out[key] = {"prompt": cfg.prompt, "seed": r["seed"], "iou": r["iou"], "solid": bb(inside), "gt": bb(gt)}
        s, g = out[key]["solid"], out[key]["gt"]
        print(f"{cfg.prompt:18s} {r['seed']} iou {r['iou']:.2f} ymin {s[0][1]:+.2f}/{g[0][1]:+.2f} ymax {s[1][1]:+.2f}/{g[1][1]:+.2f} "
              f"x {s[0][0]:+.2f}..{s[1][0]:+.2f}/{g[0][0]:+.2f}..{g[1][0]:+.2f} centroid y {s[2][1]:+.3f}/{g[2][1]:+.3f}", flush=True)
json.dump(out, open(sys.argv[-1], "w"), indent=1)
