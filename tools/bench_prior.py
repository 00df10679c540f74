"""Quality gate of the built-in prior: shape and colour accuracy of its samples, judged by a classifier trained on
the ground-truth data set, for every (colour, shape) prompt at several guidance scales; plus sample time.

    python tools/bench_prior.py                      # 32 samples x 48 prompts x guidance {1, 3, 7.5, 20}
    python tools/bench_prior.py --per-prompt 8       # quicker

The classifier (a small CNN with a shape head and a colour head) is trained on a data set generated with seed 1
(the prior was trained on seed 0) and its own accuracy on a held-out seed-2 set is reported beside the table.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from tqdm import tqdm

sys.path.append(__file__.rsplit("/tools/", 1)[0])
from tools.benchutil import machine, run_cli, table, write_json  # noqa: E402

from dreamlmc.shapes.classifier import train_classifier  # noqa: E402
from dreamlmc.shapes.world import COLOURS, SHAPES, prompt_for  # noqa: E402


def judge_ground(data: dict) -> float:
    """The share of white grounds in the judge's training data, for a prior trained on `data` (its card's record of
    its data set): the prior's own share, except for a colour-keyed ground (make_shapes_data.py --grey-colours),
    whose judge sees every colour on both grounds half the time. A judge trained on the keyed data itself could read
    the ground instead of the object (grey ground: white), and would then miss a coloured prompt drawn on grey."""
    if data.get("grey_colours"):
        return 0.5
    return float(data.get("white_fraction", 1.0))


def judge_epochs(white_fraction: float, override=None) -> int:
    """Epochs of the judge's training: a judge of mixed grounds needs 3x the white-only one's 4 (README row 106)."""
    if override is not None:
        return override
    return 4 if white_fraction >= 1.0 else 12


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="built-in prior weights (default: the shipped ones)")
    ap.add_argument("--per-prompt", type=int, default=32)
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0, 7.5, 20.0],
                    help="guidance scales (20 is the trainer's default for LMC-SDS)")
    ap.add_argument("--steps", type=int, default=25,
                    help="DDIM steps per sample. Shape accuracy at s=1, 2 samples x 48 prompts: step-6691 weights "
                         "29 %% at 10 steps, 68 %% at 25; step-8465 weights 87 %% at 25, 89 %% at 50")
    ap.add_argument("--batch", type=int, default=96, help="samples per sampler call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--judge-epochs", type=int, default=None,
                    help="epochs of the judge's training (default: 4 for a prior trained on white only, 12 for one "
                         "trained on mixed grounds: on half white, half 0.2-0.3 greys the judge reached 73 %% shape "
                         "accuracy on held-out ground truth after 4 epochs and 96 %% after 12)")
    ap.add_argument("--ground", choices=["grey"], default=None,
                    help="name this ground in every prompt ('..., on grey'; a prior trained with ground words): the "
                         "gate of the samples a grey training view is guided towards")
    ap.add_argument("--judge-white-fraction", type=float, default=None,
                    help="the share of white grounds in the judge's data (default: judge_ground of the prior's card); "
                         "a control: the shipped prior judged as a colour-keyed one is, with 0.5 (README row 139)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.judge_white_fraction is not None and not 0.0 <= args.judge_white_fraction <= 1.0:
        from dreamlmc.errors import DreamlmcError

        raise DreamlmcError(f"--judge-white-fraction must be in [0, 1], got {args.judge_white_fraction}")
    if args.judge_epochs is not None and args.judge_epochs < 1:
        from dreamlmc.errors import DreamlmcError

        raise DreamlmcError(f"--judge-epochs must be >= 1 (an untrained judge passes or fails anything), got "
                            f"{args.judge_epochs}")

    from dreamlmc.guidance.backends.builtin import BuiltinBackend

    be = BuiltinBackend(args.weights)
    if args.ground and not be.ground_words:
        from dreamlmc.errors import DreamlmcError

        raise DreamlmcError(f"--ground {args.ground}: the prior {be.weights} was trained without ground words "
                            "(tools/train_prior.py --ground-words)")
    R = be.image_resolution
    t0 = time.time()
    # the judge sees the backgrounds the prior was trained on (its card's data, if it records them)
    white = (judge_ground(be.prior_card.get("data", {})) if args.judge_white_fraction is None
             else args.judge_white_fraction)
    greys = be.prior_card.get("data", {}).get("grey_range")  # the judge learns the prior's own grounds
    if greys is None and white < 1.0:  # --judge-white-fraction on a prior without greys (the shipped one): the
        greys = list(BuiltinBackend.dark_ground_views("white")[1])  # dark-ground prior's, which keyed ones share
    epochs = judge_epochs(white, args.judge_epochs)
    clf, clf_shape, clf_colour = train_classifier(R, epochs=epochs, white_fraction=white, grey_range=greys)
    print(f"classifier (white share {white:g}, greys {greys or 'default'}, {epochs} epochs): held-out accuracy "
          f"shape {clf_shape:.3f}, "
          f"colour {clf_colour:.3f} "
          f"({time.time() - t0:.0f} s)")
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    prompts = [prompt_for(c, s, ground=args.ground) for c, s in pairs for _ in range(args.per_prompt)]
    shape_idx = torch.tensor([SHAPES.index(s) for c, s in pairs for _ in range(args.per_prompt)])
    colour_idx = torch.tensor([list(COLOURS).index(c) for c, s in pairs for _ in range(args.per_prompt)])
    rows, per_prompt = [], {}
    for gs in args.guidance:
        g = torch.Generator().manual_seed(args.seed)
        t_start = time.time()
        # Prompts are batched together (the sampler's cost is per UNet call, not per image, at 32x32 on a CPU).
        imgs = torch.cat([be.sample_images(prompts[i:i + args.batch], gs, args.steps, generator=g)
                          for i in tqdm(range(0, len(prompts), args.batch), desc=f"s={gs:g}", leave=False)])
        secs = time.time() - t_start
        with torch.no_grad():
            ls, lc = clf(imgs)
        s_ok = (ls.argmax(1) == shape_idx).float().view(len(pairs), -1)
        c_ok = (lc.argmax(1) == colour_idx).float().view(len(pairs), -1)
        for k, (colour, shape) in enumerate(pairs):
            per_prompt.setdefault(prompt_for(colour, shape), {})[str(gs)] = {
                "shape": float(s_ok[k].mean()), "colour": float(c_ok[k].mean())}
        rows.append({"guidance": gs, "shape_acc": float(s_ok.mean()), "colour_acc": float(c_ok.mean()),
                     "samples": len(prompts), "s_per_prompt": secs / len(pairs),
                     "ms_per_sample": 1000 * secs / len(prompts)})
        print(table(rows[-1:], list(rows[-1])))
    # Latency of one user-facing call (`dreamlmc sample --count 4 --steps <steps>`) for the record.
    t0 = time.time()
    be.sample_images([prompts[0]] * 4, 7.5, args.steps, generator=torch.Generator().manual_seed(0))
    latency = time.time() - t0
    info = machine()
    print(f"\nmachine: {info}; prior card steps: {be.prior_card.get('steps')}; DDIM steps {args.steps}; "
          f"{args.per_prompt} samples x {len(pairs)} prompts per guidance scale; `dreamlmc sample --count 4 "
          f"--steps {args.steps}`: "
          f"{latency:.1f} s")
    print(table(rows, ["guidance", "shape_acc", "colour_acc", "samples", "s_per_prompt", "ms_per_sample"]))
    path = write_json("prior", {"machine": info, "rows": rows, "per_prompt": per_prompt,
                                "classifier": {"shape": clf_shape, "colour": clf_colour, "white_fraction": white,
                                               "grey_range": greys, "epochs": epochs},
                                "prior_steps": be.prior_card.get("steps"), "ddim_steps": args.steps,
                                "per_prompt_samples": args.per_prompt, "ground": args.ground,
                                "batch": args.batch, "sample_count4_s": latency}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, "bench_prior"))
