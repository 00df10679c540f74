"""README row 138 (row 137 follow-up): the keyed prior's white prompts with the colour alone ("a white") as their unconditional."""
import sys, torch, numpy as np
from PIL import Image
import dreamlmc.shapes.prior as prior
torch.set_num_threads(2)
net, card = prior.load_prior(sys.argv[1])
S = ["cube", "sphere", "cylinder", "cone", "torus", "pyramid"]
P = [f"a white {s}" for s in S for _ in range(4)]
orig = prior.unconditional_prompt
rows = []
for mode in ("empty", "colour"):
    prior.unconditional_prompt = orig if mode == "empty" else (lambda p: "a white")
    for s in (7.5, 20.0):
        g = torch.Generator().manual_seed(0)
        x = prior.sample(net, P, s, 25, generator=g)
        b = torch.cat([x[..., :2, :].flatten(1), x[..., -2:, :].flatten(1)], 1).mean(1)
        sat = (x.max(1).values - x.min(1).values).mean()
        print(mode, s, f"border {b.mean():.3f}", f"colour spread {sat:.3f}", flush=True)
        rows.append(torch.cat(list(x), 2))
img = (torch.cat(rows, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2), Image.NEAREST).save(sys.argv[2])
