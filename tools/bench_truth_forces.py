"""Is the ground truth a fixed point of the training objective? The forces on a correct object, per prompt.

A guided run ends where the guidance's pull on the object's shape balances the regularisers'. This benchmark puts
the *true* object in front of the trainer's cameras (ground-truth renders of the world, sphere-traced) and measures,
per deformation of it, the derivative of the training loss: for a uniform scale k of the object about its centre,
and for a scale of its height alone,

    dL/dk = < dL_guidance/dx , dx/dk >  +  w_opacity · d(opacity penalty)/dk,

with dx/dk from renders of the object at k = 1 ± δ (central differences) and dL_guidance/dx the guidance's gradient
on the image (the same ScoreDistillation the trainer calls, at a given training progress: its scale schedule).
Descent moves k by −dL/dk: a negative guidance force grows the object, the opacity penalty's (positive) force
shrinks it. The table gives the guidance's force as a multiple of the penalty's, `growth` = −F_guid / F_pen: at 1
the truth is balanced, above 1 it grows, below 1 it shrinks. If `growth` differs between prompts, no single penalty
weight can hold every object at its size (README, ablation rows 56, 100). `outside` is the part of `growth` that comes
from pixels outside the truth's silhouette (coverage < 0.5: the background ring a growing object covers), so that a
force on size can be told apart from one on the object's own pixels (ablation row 144).

    python tools/bench_truth_forces.py                                     # the default preset, 8 prompts
    python tools/bench_truth_forces.py guidance.lmc.weight=5 --label lmc5  # any training override

Costs one guidance call per (view, draw): 8 prompts x 48 views x 4 draws take ~2 min on the 2-core CPU.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch

sys.path.append(__file__.rsplit("/tools/", 1)[0])

from tools.bench_quality import DEFAULT_PROMPTS  # noqa: E402

MODES = ("scale", "height")


def scaled_sdf(fn: Callable, mode: str, k: float) -> Callable:
    """The SDF of the shape scaled by k: uniformly ("scale") or along +Y only ("height"). A non-uniform scale is no
    longer a distance; multiplying by min(1, k) keeps it a lower bound, which sphere tracing needs."""
    if mode == "scale":
        return lambda p: k * fn(p / k)
    inv = torch.tensor([1.0, 1.0 / k, 1.0])
    return lambda p: min(1.0, k) * fn(p * inv.to(p))


def renders(shape: str, albedo, cams, mode: str, k: float) -> Dict[str, torch.Tensor]:
    from dreamlmc.shapes import world
    from dreamlmc.shapes.render import render_shapes

    name = f"{shape}@{mode}{k:g}"
    world.SDFS[name] = scaled_sdf(world.SDFS[shape], mode, k)
    try:
        return render_shapes([name] * len(cams.views), albedo.expand(len(cams.views), 3), cams,
                             ambient=world.AMBIENT, diffuse=world.DIFFUSE)
    finally:
        del world.SDFS[name]


def forces(cfg, backend, prompt: str, views: int, draws: int, progress: float, delta: float, seed: int,
           at: float = 1.0, refine: bool = False) -> Dict:
    from dreamlmc.cameras import CameraSampler
    from dreamlmc.guidance.sds import ScoreDistillation
    from dreamlmc.shapes.world import COLOURS, parse_prompt

    parts = parse_prompt(prompt)
    albedo = torch.tensor([COLOURS[parts["colour"]]], dtype=torch.float32)
    res = cfg.resolution or backend.image_resolution
    cams = CameraSampler(cfg.camera, res, res, seed=seed).sample(views)
    guidance = ScoreDistillation(cfg.guidance, backend, seed=seed + 1)
    guidance.set_progress(progress)
    rc = cfg.renderer
    base = renders(parts["shape"], albedo, cams, "scale", at)
    texts = [f"{prompt}, {v} view" for v in cams.views] if cfg.view_prompts else [prompt] * views
    grads = []  # the guidance's gradient on each view's image, one per draw: (draws, views, 3, R, R)
    rf = cfg.refine
    for _ in range(draws):
        g_views = []
        for i in range(views):
            x = base["rgb"][i:i + 1].clone().requires_grad_(True)
            if refine:  # the refinement stage's objective instead of score distillation
                out = guidance.refine(x, texts[i:i + 1], rf.t_range, rf.guidance_scale, rf.ddim_steps)
            else:
                out = guidance(x, texts[i:i + 1])
            (gx,) = torch.autograd.grad(out["loss"], x)
            g_views.append(gx[0])
        grads.append(torch.stack(g_views))
    grads = torch.stack(grads)

    def penalty(mask):  # the renderer's opacity penalty per view (mean over pixels), at full weight
        return rc.sparsity_weight * torch.sqrt(mask ** 2 + rc.sparsity_eps).mean(dim=(1, 2, 3))

    result = {}
    for mode in MODES:
        if mode == "height" and at != 1.0:
            continue  # the object is scaled uniformly to `at` first; its height alone only about the truth
        hi, lo = (renders(parts["shape"], albedo, cams, "scale", at * (1.0 + s * delta)) if mode == "scale" else
                  renders(parts["shape"], albedo, cams, mode, 1.0 + s * delta) for s in (1, -1))
        dx = (hi["rgb"] - lo["rgb"]) / (2 * delta)  # (views, 3, R, R)
        f_pen = (penalty(hi["mask"]) - penalty(lo["mask"])) / (2 * delta)  # (views,)
        f_guid = (grads * dx[None]).sum(dim=(2, 3, 4))  # (draws, views)
        per_view = f_guid.mean(0)
        fg, fp = float(per_view.mean()), float(f_pen.mean())
        outside = (base["mask"] < 0.5).float()[None]  # pixels the truth's render leaves (mostly) background
        f_out = float((grads * dx[None] * outside).sum(dim=(2, 3, 4)).mean())
        result[mode] = {"guidance": fg, "guidance_se": float(per_view.std() / np.sqrt(views)), "penalty": fp,
                        "growth": -fg / fp if fp else float("nan"),
                        "growth_se": float(per_view.std() / np.sqrt(views)) / abs(fp) if fp else float("nan"),
                        # the share of the growth from pixels outside the truth's silhouette (its background ring)
                        "growth_outside": -f_out / fp if fp else float("nan")}
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", nargs="+", default=DEFAULT_PROMPTS)
    ap.add_argument("--views", type=int, default=48, help="random training cameras per prompt")
    ap.add_argument("--draws", type=int, default=4, help="(t, ε) draws per view")
    ap.add_argument("--progress", type=float, nargs="+", default=[0.5, 1.0],
                    help="training progress at which the guidance is evaluated (its scale schedule)")
    ap.add_argument("--at", type=float, nargs="+", default=[1.0],
                    help="uniform scales of the object at which the forces are measured (1: the truth)")
    ap.add_argument("--delta", type=float, default=0.05, help="relative deformation for the central differences")
    ap.add_argument("--refine", action="store_true",
                    help="the refinement stage's objective (refine.*) instead of score distillation; growth is then "
                         "still against the opacity penalty at full weight")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default="default")
    ap.add_argument("--out", type=Path, default=Path("bench_results/truth_forces.json"))
    ap.add_argument("overrides", nargs="*", help="training overrides key=value (as for dreamlmc train)")
    args = ap.parse_args(argv)

    from dreamlmc.guidance.backends import load_backend
    from dreamlmc.trainer import resolve_config

    torch.set_grad_enabled(True)
    rows: List[Dict] = []
    backends = {}
    t0 = time.time()
    for prompt in args.prompts:
        cfg = resolve_config([], [f"prompt={prompt}"] + list(args.overrides))
        if cfg.model not in backends:
            backends[cfg.model] = load_backend(cfg.model, device=torch.device(cfg.device))
        for prog in args.progress:
            for at in args.at:
                torch.manual_seed(args.seed)
                r = forces(cfg, backends[cfg.model], prompt, args.views, args.draws, prog, args.delta, args.seed, at,
                           args.refine)
                rows.append({"prompt": prompt, "progress": prog, "at": at, **r})
                print(f"{prompt:18s} progress {prog:.2f} at {at:g}: " + "  ".join(
                    f"{m} growth {r[m]['growth']:+.2f} ± {r[m]['growth_se']:.2f} (outside {r[m]['growth_outside']:+.2f})"
                    for m in r), flush=True)
    print(f"\n{args.label}: overrides {' '.join(args.overrides) or '(none)'}; {time.time() - t0:.0f} s")
    print("| prompt | progress | at | " + " | ".join(f"{m} growth" for m in MODES) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in MODES) + " |")
    for r in rows:
        print(f"| {r['prompt']} | {r['progress']:.2f} | {r['at']:g} | " + " | ".join(
            f"{r[m]['growth']:+.2f} ± {r[m]['growth_se']:.2f}" if m in r else "" for m in MODES) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"label": args.label, "overrides": list(args.overrides), "views": args.views, "draws": args.draws,
              "delta": args.delta, "seed": args.seed, "rows": rows}
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
