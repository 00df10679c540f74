"""Row 136: 3 samples at s = 20 (25 DDIM steps, seed 0) of red, green, blue and white spheres and cylinders, one row per
prior.   python 136_samples_s20_tiles.py OUT.png dreamlmc/assets/builtin_prior.safetensors PRIOR_STEP15752"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3]))
import torch, numpy as np
from PIL import Image
import dreamlmc.shapes.prior as prior
torch.set_num_threads(2)
P = [f"a {c} {s}" for s in ("sphere", "cylinder") for c in ("red", "green", "blue", "white")]
rows = []
for w in sys.argv[2:]:
    net, card = prior.load_prior(w)
    g = torch.Generator().manual_seed(0)
    x = prior.sample(net, [p for p in P for _ in range(3)], 20.0, 25, generator=g)
    rows.append(torch.cat(list(x), dim=2))
img = (torch.cat(rows, 1).permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2), Image.NEAREST).save(sys.argv[1])
