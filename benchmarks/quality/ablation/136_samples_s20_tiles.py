"""Row 136: 3 samples at s = 20 (25 DDIM steps, seed 0) of red, green, blue and white spheres and cylinders, one row per
prior, drawn 2x.   python 136_samples_s20_tiles.py OUT.png dreamlmc/assets/builtin_prior.safetensors PRIOR_STEP15752"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3]))
import torch
import dreamlmc.shapes.prior as prior
from dreamlmc.media import grid, save_png
torch.set_num_threads(2)
P = [f"a {c} {s}" for s in ("sphere", "cylinder") for c in ("red", "green", "blue", "white")]
rows = []
for w in sys.argv[2:]:
    net, card = prior.load_prior(w)
    rows.append(prior.sample(net, [p for p in P for _ in range(3)], 20.0, 25, generator=torch.Generator().manual_seed(0)))
save_png(grid(rows).repeat_interleave(2, -1).repeat_interleave(2, -2), sys.argv[1])
