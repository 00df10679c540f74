"""README row 137. Grounds of a prior's samples: share of dark borders (outer 2 px mean < 0.8) for coloured prompts (want 0) and
for white prompts (want 1 for a colour-keyed prior), seed 0, 4 samples per prompt."""
import sys, torch
import dreamlmc.shapes.prior as prior
torch.set_num_threads(2)
S = ["cube", "sphere", "cylinder", "cone", "torus", "pyramid"]
sets = {"red/green/blue": [f"a {c} {s}" for c in ["red", "green", "blue"] for s in S],
        "white": [f"a white {s}" for s in S], "black": [f"a black {s}" for s in S]}
net, card = prior.load_prior(sys.argv[1])
for s in [float(x) for x in sys.argv[2:]]:
    for name, P in sets.items():
        g = torch.Generator().manual_seed(0)
        x = prior.sample(net, [p for p in P for _ in range(4)], s, 25, generator=g)
        b = torch.cat([x[..., :2, :].flatten(1), x[..., -2:, :].flatten(1), x[..., :, :2].flatten(1),
                       x[..., :, -2:].flatten(1)], 1).mean(1)
        print(card.get("steps"), f"s={s}", name, f"dark {(b < 0.8).float().mean():.3f}", f"mean border {b.mean():.3f}",
              flush=True)
