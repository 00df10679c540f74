"""2D check for README ablation row 96: what a prior draws for "a red {shape}, overhead view" (DDIM samples, 25
steps, the same noise for every prior and shape), beside 8 overhead images (elevation > 60°) of the data.
Rows: shapes (cube, sphere, cylinder, cone, torus, pyramid); column blocks: data | each prior given. Printed and
written beside OUT (.json): each block's mean silhouette height / width per shape (pixels darker than 0.8 in any
channel), over 16 samples at s = 1 and 7.5 (the grid shows the first 8 at s = 1). From overhead a torus is a ring (about 1), from the side a
flat band (about 0.4).
    python 96_prior_overhead_samples.py OUT.png DATA.npz PRIOR.safetensors [PRIOR ...]"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from dreamlmc.media import save_png
from dreamlmc.shapes.prior import load_prior, sample
from dreamlmc.shapes.world import COLOURS, SHAPES

torch.set_num_threads(2)
out, data, priors = sys.argv[1], sys.argv[2], sys.argv[3:]
N, M = 8, 16
blocks, aspects = [], {}


def aspect(x):
    """Mean silhouette height / width of (B, 3, H, W) images in [0, 1]."""
    sil = (x < 0.8).any(1)
    h, w = sil.any(2).sum(-1).float(), sil.any(1).sum(-1).float()
    return round(float((h / w.clamp(min=1)).mean()), 3)


with np.load(data) as d:
    rows = []
    for shape in SHAPES:
        m = (d["shape"] == SHAPES.index(shape)) & (d["colour"] == list(COLOURS).index("red")) & (d["elevation"] > 60)
        imgs = torch.from_numpy(d["images"][m][:M]).float().div(255).permute(0, 3, 1, 2)
        aspects.setdefault("data (elevation > 60)", {})[shape] = aspect(imgs)
        low = (d["shape"] == SHAPES.index(shape)) & (d["colour"] == list(COLOURS).index("red")) & (d["elevation"] < 45)
        side = torch.from_numpy(d["images"][low][:M]).float().div(255).permute(0, 3, 1, 2)
        aspects.setdefault("data (elevation < 45)", {})[shape] = aspect(side)
        imgs = imgs[:N]
        imgs = torch.cat([imgs, torch.ones(N - len(imgs), *imgs.shape[1:])]) if len(imgs) < N else imgs
        rows.append(torch.cat(list(imgs), -1))
    blocks.append(torch.cat(rows, -2))
for path in priors:
    net, _ = load_prior(path)
    net.eval()
    rows = []
    for shape in SHAPES:
        for s in (7.5, 1.0):  # the grid shows s = 1
            x = sample(net, [f"a red {shape}, overhead view"] * M, s, 25, generator=torch.Generator().manual_seed(0))
            aspects.setdefault(f"{path} s={s:g}", {})[shape] = aspect(x)
        rows.append(torch.cat(list(x[:N].clamp(0, 1)), -1))
    blocks.append(torch.cat(rows, -2))
    print("sampled", path, flush=True)
sep = torch.zeros(3, blocks[0].shape[1], 4)
grid = torch.cat([b for blk in blocks for b in (blk, sep)][:-1], -1)
save_png(torch.nn.functional.interpolate(grid[None], scale_factor=2, mode="nearest")[0], out)
Path(out).with_suffix(".json").write_text(json.dumps(aspects, indent=1))
for k, v in aspects.items():
    print(k, v)
print("wrote", out)
