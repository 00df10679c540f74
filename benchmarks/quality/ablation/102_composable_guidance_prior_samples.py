"""Row 102's 2D check: the built-in prior's own DDIM samples (30 steps, 8 per row, the same noise in every row) of
"a white cube, front view" and "a red cube, front view" under composable guidance,
ε̂ = ε_u + s_p (ε_partial − ε_u) + s (ε_c − ε_partial), with the partial prompt the colour alone (the shape word
dropped; guidance.partial_scale) or the shape alone (the colour word dropped). (s_p, s) = (20, 20) is plain guidance
at s = 20, (1, 1) the purely conditional prior. Prints each row's foreground share and mean brightness; writes the grid beside this file.

    python benchmarks/quality/ablation/102_composable_guidance_prior_samples.py
"""
import json
from pathlib import Path

import torch

from dreamlmc.guidance.backends.builtin import default_weights
from dreamlmc.guidance.diffusion import ddim_sample
from dreamlmc.media import save_png
from dreamlmc.shapes.prior import load_prior, make_scheduler, tokenize_parts

torch.set_num_threads(1)
net, _ = load_prior(default_weights())


@torch.no_grad()
def samples(colour, shape, keep, s_p, s, n=8):
    x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    partial = tokenize_parts(colour if keep == "colour" else None, shape if keep == "shape" else None, "front")
    ids = torch.tensor([tokenize_parts(colour, shape, "front")] * n + [partial] * n + [tokenize_parts(None, None, None)] * n)
    hidden = net.encode(ids)

    def predict(x_t, t):
        e_c, e_p, e_u = net.predict(torch.cat([x_t] * 3), torch.cat([t] * 3), hidden).chunk(3)
        return e_u + s_p * (e_p - e_u) + s * (e_c - e_p), e_u  # sampled at scale 1: the first is ε̂

    return ((ddim_sample(predict, x, make_scheduler(net.cfg), 30, 1.0) + 1) / 2).clamp(0, 1)


rows, table = [], []
for colour in ("white", "red"):
    for keep, s_p, s in (("colour", 1, 1), ("colour", 20, 20), ("colour", 3, 20), ("colour", 7.5, 20), ("colour", 3, 12),
                         ("shape", 20, 3), ("shape", 12, 3)):
        x = samples(colour, "cube", keep, s_p, s)
        fg = (x - 1).abs().sum(1) > 0.06
        row = dict(prompt=f"a {colour} cube", partial=keep, s_p=s_p, s=s, foreground=round(fg.float().mean().item(), 3),
                   brightness=round(x.mean(1)[fg].mean().item(), 3))
        print(row)
        table.append(row)
        rows.append(torch.cat(list(x), dim=2))
here = Path(__file__)
save_png(torch.cat(rows, dim=1), here.with_suffix(".png"))
here.with_suffix(".json").write_text(json.dumps(table, indent=1))
