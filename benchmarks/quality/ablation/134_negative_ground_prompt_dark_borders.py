# Row 134: dark-border fraction of plain prompts on the ground-word prior (row 128), unconditional "" vs the negative prompt "on grey".
# python 134_negative_ground_prompt_dark_borders.py PRIOR  (output: 134_*.txt; tiles: 134_negative_ground_prompt_samples.png, rows "" at s = 7.5, 20, then "on grey" at 7.5, 20)
import sys, torch
import dreamlmc.shapes.prior as P
torch.set_num_threads(2)
S = ["cube", "sphere", "cylinder", "cone", "torus", "pyramid"]; C = ["red", "green", "blue"]
prompts = [f"a {c} {s}" for c in C for s in S]
net, card = P.load_prior(sys.argv[1])
orig = P.unconditional_prompt
for name, unc in (("empty", orig), ("neg-grey", lambda p: orig(p) or "on grey")):
    P.unconditional_prompt = unc
    for s in (7.5, 20.0):
        g = torch.Generator().manual_seed(0)
        x = P.sample(net, [p for p in prompts for _ in range(4)], s, 25, generator=g)
        b = torch.cat([x[..., :2, :].flatten(1), x[..., -2:, :].flatten(1), x[..., :, :2].flatten(1), x[..., :, -2:].flatten(1)], 1).mean(1)
        print(name, f"s={s}", f"dark-border {(b < 0.8).float().mean():.3f}", f"border mean {b.mean():.3f}", f"image mean {x.mean():.3f}", flush=True)
        torch.save(x, f"{name}_{s}.pt")
