"""Row 131: how often a prior's samples of plain prompts (no ground word: a white ground) have a dark border, at
s = 7.5 and 20. 18 prompts (red, green, blue x the 6 shapes) x 4 samples, 25 DDIM steps, seed 0; a sample's border
is its outer 2 pixels, "dark" below 0.8 (the white ground is 1). Output: 131_ground_words_dark_borders.txt.

    python 131_ground_words_dark_borders.py dreamlmc/assets/builtin_prior.safetensors PRIOR_STEP12576 PRIOR_STEP13652

Row 134: --negative-grey also samples each plain prompt with "on grey" as its unconditional partner (a negative
prompt; ground-word priors only) and --tiles PNG writes the first sample of each prompt, one row per setting
(output: 134_negative_ground_prompt_dark_borders.txt, 134_negative_ground_prompt_samples.png).

    python 131_ground_words_dark_borders.py PRIOR_STEP13652 --negative-grey --tiles 134_negative_ground_prompt_samples.png

Row 137: --colours picks the prompts' colours (default red green blue; the colour-keyed prior's white and black
prompts too, output: 137_colour_keyed_grounds.txt). Row 138: --colour-unconditional also samples each prompt with its
colour alone ("a white") as its unconditional partner (output: 138_colour_keyed_colour_unconditional.txt, tiles
138_colour_keyed_colour_unconditional_white_prompts.png). Each line ends with the samples' colour spread (the mean
over pixels of max - min channel: 0 for grey images), a field added at row 138 (rows 131 and 134's outputs predate it).

    python 131_ground_words_dark_borders.py PRIOR_KEYED --colours white --colour-unconditional --tiles OUT.png
"""
import argparse, sys
import numpy as np, torch
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[3]))
import dreamlmc.shapes.prior as prior
from dreamlmc.shapes.world import parse_prompt
torch.set_num_threads(2)
S = ["cube", "sphere", "cylinder", "cone", "torus", "pyramid"]
ap = argparse.ArgumentParser()
ap.add_argument("weights", nargs="+")
ap.add_argument("--colours", nargs="+", default=["red", "green", "blue"])
ap.add_argument("--negative-grey", action="store_true")
ap.add_argument("--colour-unconditional", action="store_true")
ap.add_argument("--tiles", default=None)
args = ap.parse_args()
P = [f"a {c} {s}" for c in args.colours for s in S]
plain = prior.unconditional_prompt
# each arm names its unconditional itself (the extra argument, a keyed prior's colours, is ignored: since row 139
# sample() gives a keyed prior's colours the colour alone, and the "" arm here is rows 137-138's "")
uncs = [("\"\"", lambda p, *_: plain(p))]
uncs += [("negative 'on grey'", lambda p, *_: plain(p) or "on grey")] if args.negative_grey else []
uncs += [("colour alone", lambda p, *_: f"a {parse_prompt(p)['colour']}")] if args.colour_unconditional else []
rows = []
for w in args.weights:
    net, card = prior.load_prior(w)
    for name, unc in uncs:
        prior.unconditional_prompt = unc  # sample() pairs each prompt with unconditional_prompt(prompt, keyed)
        for s in (7.5, 20.0):
            g = torch.Generator().manual_seed(0)
            x = prior.sample(net, [p for p in P for _ in range(4)], s, 25, generator=g)  # (N, 3, R, R) in [0, 1]
            b = torch.cat([x[..., :2, :].flatten(1), x[..., -2:, :].flatten(1), x[..., :, :2].flatten(1), x[..., :, -2:].flatten(1)], 1).mean(1)
            spread = (x.max(1).values - x.min(1).values).mean()
            print(w.split('/')[-1], card.get('steps'), *([f"unconditional {name}"] if len(uncs) > 1 else []), f"s={s}",
                  " ".join(args.colours), f"dark-border fraction {(b < 0.8).float().mean():.3f}",
                  f"border mean {b.mean():.3f}", f"colour spread {spread:.3f}", flush=True)
            rows.append(torch.cat(list(x[::4]), dim=2))  # one row: the first sample of each prompt
    prior.unconditional_prompt = plain
if args.tiles:
    from PIL import Image
    a = (torch.cat(rows, dim=1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    Image.fromarray(a).resize((a.shape[1] * 3, a.shape[0] * 3), Image.NEAREST).save(args.tiles)
