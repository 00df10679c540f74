# Ablation row 99: score runs with the cells no training camera (elevations 0-30 deg) can see filled, against the
# solid bench_quality scores (enclosed cavities filled only). Usage: python 99_unseen_fill.py RUN_DIR ... (prints per run)
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))  # the checkout
from dreamlmc.runs import load_trainer
from dreamlmc.shapes import metrics, world
from scipy.ndimage import binary_fill_holes

def unseen_fill(solid, bound=1.0, elevations=(0, 15, 30), n_az=16):
    """cells from which no ray toward a camera in the given elevations escapes without hitting the solid"""
    R = solid.shape[0]
    V = torch.from_numpy(solid.astype(np.float32))[None, None]  # D=x, H=y, W=z
    lin = (torch.arange(R, dtype=torch.float32) + 0.5) / R * 2 - 1  # normalised coords
    A, B, C = torch.meshgrid(lin, lin, lin, indexing="ij")
    pts = torch.stack([A, B, C], -1)  # normalised world coords of original cells (x,y,z)
    seen = torch.zeros(R, R, R, dtype=torch.bool)
    for el in elevations:
        for k in range(n_az):
            az = 2 * math.pi * k / n_az
            e = math.radians(el)
            d = torch.tensor([math.cos(e) * math.sin(az), math.sin(e), math.cos(e) * math.cos(az)])
            up = torch.tensor([0.0, 1.0, 0.0]) if abs(el) < 80 else torch.tensor([1.0, 0, 0])
            u = torch.linalg.cross(up, d); u = u / u.norm(); v = torch.linalg.cross(d, u)
            # rotated volume: Q[i,j,k] = V(u*a_i + v*b_j + d*c_k)
            P = A[..., None] * u + B[..., None] * v + C[..., None] * d  # (R,R,R,3) world xyz normalised
            Q = F.grid_sample(V, P[..., [2, 1, 0]][None], mode="nearest", align_corners=False)[0, 0]
            # occluded toward +d (increasing k), excluding the cell itself
            rev = torch.flip(Q, [2])
            cm = torch.cummax(rev, 2).values
            cm = torch.cat([torch.zeros_like(cm[:, :, :1]), cm[:, :, :-1]], 2)
            occ = torch.flip(cm, [2])
            # back: each original cell's rotated coords (a,b,c) = (p.u, p.v, p.d)
            ab = torch.stack([(pts * u).sum(-1), (pts * v).sum(-1), (pts * d).sum(-1)], -1)
            o = F.grid_sample(occ[None, None], ab[..., [2, 1, 0]][None], mode="nearest", align_corners=False)[0, 0]
            seen |= o < 0.5
    return solid | (~seen).numpy()

def score(tr, grid, fill):
    _, level = tr.surface()
    solid = grid > level
    solid = binary_fill_holes(solid)
    if fill:
        solid = unseen_fill(solid)
    r = solid.shape[0]; bound = tr.cfg.renderer.field.bound
    def fn(p):
        idx = np.floor((p.numpy() / bound * 0.5 + 0.5) * r).astype(int)
        ok = ((idx >= 0) & (idx < r)).all(-1); idx = np.clip(idx, 0, r - 1)
        return ok & solid[idx[:, 0], idx[:, 1], idx[:, 2]]
    shape = world.parse_prompt(tr.cfg.prompt)["shape"]
    iou, yaw = metrics.best_yaw_iou(fn, shape, n=60_000, yaw_step=5.0)
    near, _ = metrics.nearest_shape(fn, n=40_000, yaw_step=5.0)
    hole = metrics.has_hole(fn) if shape == "torus" else None
    return iou, near, hole

for run in sys.argv[1:]:
    tr = load_trainer(run)
    grid = metrics.export_grid(tr)
    t0 = time.time()
    a = score(tr, grid, False); t1 = time.time(); b = score(tr, grid, True); t2 = time.time()
    print(run.split("/")[-1][:45], "iou %.3f -> %.3f" % (a[0], b[0]), a[1], "->", b[1], "hole", a[2], b[2], "fill %.1fs" % (t2 - t1 - (t1 - t0)), flush=True)
