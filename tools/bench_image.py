"""The paper's 2D claims on the built-in world: optimisation-based image synthesis with SDS and LMC-SDS.

    python tools/bench_image.py       # 2 methods x 3 scales x 3 seeds x 8 prompts (~10 min per cell on one thread)

Each cell optimises the 8 quality prompts' images from 50 % grey (what `dreamlmc image` does: 300 steps, lr 0.02,
a fixed ε per seed) and scores them against ground-truth renders of the same prompts (64 per prompt, random
training cameras): sharpness (Laplacian variance) and HSV saturation of object (not near-white) pixels as ratios
to the ground truth's (saturation over the chromatic prompts), and whether the world's ground-truth classifier reads the prompt's shape and colour
in the image. Diversity: mean pairwise L1 between the seeds' images of one prompt (fixed-ε seeds as variations).
Rows are means over seeds with their standard error (±).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.append(__file__.rsplit("/tools/", 1)[0])
from dreamlmc.io import atomic_write_text  # noqa: E402
from tools.benchutil import machine, mean_se, run_cli, table, world_classifier, write_json  # noqa: E402

DEFAULT_PROMPTS = ["a red cube", "a blue sphere", "a green cylinder", "a yellow cone", "a purple torus",
           "an orange pyramid", "a white cube", "a black sphere"]


def synthesise(backend, kind: str, scale: float, seeds, prompts, steps: int, lr: float) -> torch.Tensor:
    """All seeds in one batch: seed k's images get the fixed ε* of eps_seed k (as `dreamlmc image --eps-seed k`)
    -> (len(seeds), len(prompts), 3, R, R)."""
    from dreamlmc.guidance.noise import NoiseSource
    from dreamlmc.guidance.sds import GuidanceConfig, ScoreDistillation

    torch.manual_seed(seeds[0])
    guidance = ScoreDistillation(GuidanceConfig(kind=kind, guidance_scale=scale, fixed_eps=False), backend,
                                 seed=seeds[0])
    eps = torch.cat([NoiseSource(backend.latent_shape, True, eps_seed=s).sample(len(prompts)) for s in seeds])
    R, B = backend.image_resolution, len(seeds) * len(prompts)
    logits = torch.zeros(B, 3, R, R, requires_grad=True)  # sigmoid(0) = 50 % grey
    opt = torch.optim.Adam([logits], lr=lr)
    cond, uncond = guidance.embed(list(prompts) * len(seeds))
    for _ in range(steps):
        loss = guidance(torch.sigmoid(logits), cond=cond, uncond=uncond, eps=eps)["loss"] * B
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.sigmoid(logits).detach().view(len(seeds), len(prompts), 3, R, R)


def _object_mask(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W): pixels that are not near-white background."""
    return (images < 0.9).any(1, keepdim=True).float()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", nargs="+", default=["sds:7.5", "lmc-sds:7.5", "sds:20", "lmc-sds:20", "sds:100",
                                                    "lmc-sds:100"], help="method:scale pairs")
    ap.add_argument("--prompts", nargs="+", default=DEFAULT_PROMPTS)
    ap.add_argument("--workdir", default=str(Path.home() / ".cache/dreamlmc/bench_image"),
                    help="each cell's images are cached here (an interrupted run keeps the cells it finished)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--out", default=None)
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--figure", default=None, help="PNG: ground truth, then one row per (method, scale), seed 0; columns: the 8 prompts")
    args = ap.parse_args(argv)

    from safetensors.torch import load_file, save_file

    from dreamlmc.guidance.backends import load_backend
    from dreamlmc.io import atomic_write
    from dreamlmc.shapes.data import ground_truth_renders
    from dreamlmc.shapes.metrics import saturation, sharpness
    from dreamlmc.shapes.world import COLOURS, SHAPES, parse_prompt

    PROMPTS = args.prompts
    cells = [(c.split(":")[0], float(c.split(":")[1])) for c in args.cells]
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    backend = load_backend("builtin")
    R = backend.image_resolution
    chromatic = [i for i, p in enumerate(PROMPTS) if parse_prompt(p)["colour"] not in ("white", "black")]
    gt = ground_truth_renders(PROMPTS, 64, R, seed=7).view(len(PROMPTS), 64, 3, R, R)
    gt_sharp = torch.tensor([sharpness(g) for g in gt])
    # saturation over object pixels (not near-white): the synthesised objects fill more of the frame than the
    # ground truth's, so a whole-image mean would measure coverage, not colour
    gt_sat = torch.tensor([saturation(g, _object_mask(g)) for g in gt])
    t0 = time.time()
    clf, clf_shape, clf_colour = world_classifier(R)
    print(f"classifier: held-out accuracy shape {clf_shape:.3f}, colour {clf_colour:.3f} ({time.time() - t0:.0f} s)",
          file=sys.stderr)
    shape_idx = torch.tensor([SHAPES.index(parse_prompt(p)["shape"]) for p in PROMPTS])
    colour_idx = torch.tensor([list(COLOURS).index(parse_prompt(p)["colour"]) for p in PROMPTS])

    per_seed, images = [], {}
    for kind, scale in cells:
        key = f"{kind}_s{scale:g}_seeds{'-'.join(map(str, args.seeds))}_{args.steps}_{len(PROMPTS)}p.safetensors"
        t0 = time.time()
        if (work / key).exists():
            cached = load_file(str(work / key))
            xs, secs = cached["images"], float(cached["seconds"])
        else:
            xs = synthesise(backend, kind, scale, args.seeds, PROMPTS, args.steps, args.lr)
            secs = time.time() - t0
            atomic_write(work / key, lambda p: save_file({"images": xs.contiguous(),
                                                          "seconds": torch.tensor(secs)}, str(p)))
        print(f"{kind} s={scale:g}: {secs:.0f} s", file=sys.stderr)
        for seed, x in zip(args.seeds, xs):
            images[(kind, scale, seed)] = x
            with torch.no_grad():
                ls, lc = clf(x)
            sharp = torch.tensor([sharpness(x[i:i + 1]) for i in range(len(PROMPTS))]) / gt_sharp
            sat = torch.tensor([saturation(x[i:i + 1], _object_mask(x[i:i + 1]))
                                for i in range(len(PROMPTS))]) / gt_sat
            per_seed.append({"method": kind, "s": scale, "seed": seed, "sharpness_ratio": float(sharp.mean()),
                             "saturation_ratio": float(sat[chromatic].mean()),
                             "shape_acc": float((ls.argmax(1) == shape_idx).float().mean()),
                             "colour_acc": float((lc.argmax(1) == colour_idx).float().mean()),
                             "seconds": secs / len(args.seeds)})
    wall = sum(r["seconds"] for r in per_seed)  # synthesis time, cached cells included

    metrics = ["sharpness_ratio", "saturation_ratio", "shape_acc", "colour_acc", "diversity_l1"]
    rows = []
    for kind, scale in cells:
        rs = [r for r in per_seed if (r["method"], r["s"]) == (kind, scale)]
        row = {"method": kind, "s": scale, "seeds": len(rs)}
        for m in metrics[:4]:
            row[m], row[m + "_se"] = mean_se([r[m] for r in rs])
        xs = [images[(kind, scale, s)] for s in args.seeds]
        # per prompt, mean pairwise L1 between seeds; ± over prompts
        div = [statistics.fmean(float((xs[i][p] - xs[j][p]).abs().mean()) for i in range(len(xs))
                                for j in range(i + 1, len(xs))) for p in range(len(PROMPTS))] \
            if len(xs) > 1 else [0.0]
        row["diversity_l1"], row["diversity_l1_se"] = mean_se(div)
        rows.append(row)
    shown = [{**{k: r[k] for k in ("method", "s", "seeds")},
              **{m: f"{r[m]:.3f} ± {r[m + '_se']:.3f}" for m in metrics}} for r in rows]
    cols = ["method", "s", "seeds"] + metrics
    head = (f"machine: {machine()['cpu']}, {machine()['cores']} cores; {args.steps} steps from grey, lr {args.lr}, "
            f"{len(PROMPTS)} prompts x seeds {args.seeds} per cell; {wall:.0f} s of synthesis on one thread. Ratios against ground-truth "
            f"renders; classifier held-out accuracy shape {clf_shape:.3f}, colour {clf_colour:.3f}; ± is the standard error over "
            "seeds (diversity: over prompts).")
    print("\n" + head)
    print(table(shown, cols))
    path = write_json("image", {"machine": machine(), "rows": rows, "per_seed": per_seed, "args": vars(args),
                                "wall_s": wall}, args.out)
    print(f"wrote {path}")
    if args.markdown:
        atomic_write_text(Path(args.markdown), head + "\n\n" + table(shown, cols) + "\n")
    if args.figure:
        from dreamlmc.media import save_png

        rows_ = [gt[:, 0]] + [images[(k, s, args.seeds[0])] for k, s in cells]
        fig = torch.cat([torch.cat(list(r), -1) for r in rows_], -2)
        save_png(torch.nn.functional.interpolate(fig[None], scale_factor=3, mode="nearest")[0], Path(args.figure))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, "bench_image"))
