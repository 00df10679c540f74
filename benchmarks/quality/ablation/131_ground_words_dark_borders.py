"""Row 131: how often a prior's samples of plain prompts (no ground word: a white ground) have a dark border, at
s = 7.5 and 20. 18 prompts (red, green, blue x the 6 shapes) x 4 samples, 25 DDIM steps, seed 0; a sample's border
is its outer 2 pixels, "dark" below 0.8 (the white ground is 1). Output: 131_ground_words_dark_borders.txt.

    python 131_ground_words_dark_borders.py dreamlmc/assets/builtin_prior.safetensors PRIOR_STEP12576 PRIOR_STEP13652
"""
import sys, torch
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[3]))
from dreamlmc.shapes.prior import load_prior, sample
torch.set_num_threads(2)
S = ["cube", "sphere", "cylinder", "cone", "torus", "pyramid"]
C = ["red", "green", "blue"]
P = [f"a {c} {s}" for c in C for s in S]
for w in sys.argv[1:]:
    net, card = load_prior(w)
    for s in (7.5, 20.0):
        g = torch.Generator().manual_seed(0)
        x = sample(net, [p for p in P for _ in range(4)], s, 25, generator=g)  # (N, 3, R, R) in [0, 1]
        b = torch.cat([x[..., :2, :].flatten(1), x[..., -2:, :].flatten(1), x[..., :, :2].flatten(1), x[..., :, -2:].flatten(1)], 1).mean(1)
        print(w.split('/')[-1], card.get('steps'), f"s={s}", f"dark-border fraction {(b < 0.8).float().mean():.3f}", f"border mean {b.mean():.3f}", flush=True)
