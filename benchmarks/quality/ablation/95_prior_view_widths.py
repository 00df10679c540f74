"""2D check for README ablation row 95: does a prior draw corner-on cubes and pyramids (wider) for 'three-quarter
view' and face-on ones for 'front view'? Mean silhouette width (columns with a pixel darker than 0.8 in any channel,
of 32) of 16 DDIM samples (25 steps) per (prompt, view word, scale), the same noise for every cell; and the same
width over the prior's data (tools/make_shapes_data.py's default file), binned by the 45° view words.
    python 95_prior_view_widths.py PRIOR.safetensors OUT.json [DATA.npz]"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from dreamlmc.cameras import view_label
from dreamlmc.shapes.prior import load_prior, sample
from dreamlmc.shapes.world import COLOURS, SHAPES

VIEWS = ["front", "three-quarter", "side"]
PROMPTS = {"a red cube": ("red", "cube"), "an orange pyramid": ("orange", "pyramid")}
torch.set_num_threads(2)
out = {}
data = Path(sys.argv[3] if len(sys.argv) > 3 else Path.home() / ".cache/dreamlmc/shapes32.npz")
with np.load(data) as d:
    for prompt, (colour, shape) in PROMPTS.items():
        m = (d["shape"] == SHAPES.index(shape)) & (d["colour"] == list(COLOURS).index(colour))
        w = ((d["images"][m] / 255.0 < 0.8).any(-1).any(1)).sum(-1)
        lab = np.array([view_label(float(e), float(a), fine=True) for e, a in zip(d["elevation"][m], d["azimuth"][m])])
        out[f"data {prompt}"] = {v: round(float(w[lab == v].mean()), 2) for v in VIEWS}
        print(f"data {prompt}", out[f"data {prompt}"], flush=True)
for name, path in [("shipped", "dreamlmc/assets/builtin_prior.safetensors"), ("fine", sys.argv[1])]:
    net, _ = load_prior(path)
    net.eval()
    for prompt in PROMPTS:
        for s in (1.0, 20.0):
            row = {}
            for view in VIEWS:
                x = sample(net, [f"{prompt}, {view} view"] * 16, s, 25, generator=torch.Generator().manual_seed(0))
                row[view] = round(float((x < 0.8).any(1).any(1).float().sum(-1).mean()), 2)
            out[f"{name} {prompt} s={s:g}"] = row
            print(name, prompt, s, row, flush=True)
            Path(sys.argv[2]).write_text(json.dumps(out, indent=1))
