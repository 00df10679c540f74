"""The image-to-image translation network on the built-in world, measured on held-out images over several seeds.

    python tools/bench_translate.py --workers 2          # 2 tasks x 3 methods x 3 seeds of 300 steps (~25 min, 2 cores)

Two tasks, each trained on ground-truth renders (training seed s) and scored on new renders (seed 100 + s):
- colour: blue, green and yellow cubes -> "a red cube". Target attribute: colour red. Structure kept: silhouette
  IoU between input and output. Also scored on a shape the network never saw (cylinders).
- shape: blue cubes -> "a blue sphere". Target attribute: shape sphere. Structure kept: colour still blue.
Attributes are judged by the prior's ground-truth classifier (dreamlmc.shapes.classifier: trained on seed-1 world
data, never on the prior's samples), as in the prior's quality gate. Methods: SDS, LMC-SDS, and DDS (source prompt:
each render's own world prompt). Every row is a mean over the seeds with its standard error (±). Trained networks
are cached in --workdir (pass --fresh to retrain).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

import torch

sys.path.append(__file__.rsplit("/tools/", 1)[0])
from dreamlmc.io import atomic_write_text  # noqa: E402
from tools.benchutil import machine, mean_se, run_cli, table, world_classifier, write_json  # noqa: E402

TASKS = {
    "colour": {"sources": ["a blue cube", "a green cube", "a yellow cube"], "target": "a red cube",
               "attribute": ("colour", "red"), "unseen": ["a blue cylinder", "a green cylinder", "a yellow cylinder"]},
    "shape": {"sources": ["a blue cube"], "target": "a blue sphere", "attribute": ("shape", "sphere"),
              "unseen": []},
}
METHODS = ["sds", "lmc-sds", "dds"]


def _train(job) -> float:
    """One training in its own process (one thread per worker); returns seconds."""
    task, method, seed, steps, path, threads = job
    torch.set_num_threads(threads)
    from dreamlmc.translate import TranslateConfig, train_translation

    t = TASKS[task]
    cfg = TranslateConfig(prompt=t["target"], source_prompts=tuple(t["sources"]), steps=steps, guidance=method,
                          seed=seed)
    t0 = time.time()
    train_translation(cfg, Path(path), progress=False)
    return time.time() - t0


def _tiles(n: int, k: int = 6) -> torch.Tensor:
    """k evenly spaced indices of n held-out images (the figure's tiles)."""
    return torch.linspace(0, n - 1, min(k, n)).round().long()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--per-prompt", type=int, default=16, help="held-out renders per source prompt")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--workdir", default=str(Path.home() / ".cache/dreamlmc/bench_translate"))
    ap.add_argument("--fresh", action="store_true", help="retrain networks already in --workdir")
    ap.add_argument("--out", default=None)
    ap.add_argument("--markdown", default=None, help="also write the tables here")
    ap.add_argument("--figure", default=None, help="PNG: per task, held-out inputs then one row per method (seed 0)")
    args = ap.parse_args(argv)

    from dreamlmc.shapes.data import ground_truth_renders
    from dreamlmc.shapes.world import COLOURS, SHAPES, parse_prompt
    from dreamlmc.translate import load_translation

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    jobs = []
    for task in args.tasks:
        for method in args.methods:
            for seed in args.seeds:
                path = work / f"{task}__{method}__seed{seed}__{args.steps}.safetensors"
                if args.fresh or not path.exists():
                    jobs.append((task, method, seed, args.steps, str(path), max(1, (torch.get_num_threads()
                                                                                    // args.workers))))
    t_wall = time.time()
    print(f"{len(jobs)} trainings of {args.steps} steps with {args.workers} workers -> {work}", file=sys.stderr)
    if args.workers > 1 and len(jobs) > 1:
        with mp.get_context("spawn").Pool(args.workers) as pool:
            secs = pool.map(_train, jobs, chunksize=1)
    else:
        secs = [_train(j) for j in jobs]
    train_s = {Path(j[4]).name: s for j, s in zip(jobs, secs)}
    wall = time.time() - t_wall

    t0 = time.time()
    clf, clf_shape, clf_colour = world_classifier(32)
    print(f"classifier: held-out accuracy shape {clf_shape:.3f}, colour {clf_colour:.3f} ({time.time() - t0:.0f} s)",
          file=sys.stderr)
    colours = list(COLOURS)

    def judge(x):
        with torch.no_grad():
            ls, lc = clf(torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", antialias=True)
                         if x.shape[-1] != 32 else x)
        return ls.argmax(1), lc.argmax(1)

    per_seed, figure_rows = [], []
    for task in args.tasks:
        t = TASKS[task]
        kind, value = t["attribute"]
        target_idx = (SHAPES if kind == "shape" else colours).index(value)
        sets = {"seen shape": t["sources"]}
        if t["unseen"]:
            sets["unseen shape"] = t["unseen"]
        task_fig = {}
        for seed in args.seeds:
            held = {name: (ground_truth_renders(ps, args.per_prompt, 32, seed=100 + seed),
                           torch.tensor([colours.index(parse_prompt(p)["colour"]) for p in ps
                                         for _ in range(args.per_prompt)]))
                    for name, ps in sets.items()}
            if seed == args.seeds[0]:
                task_fig["inputs"] = torch.cat([torch.cat(list(x[_tiles(len(x))]), -1) for x, _ in held.values()], -1)
            for method in args.methods:
                name = f"{task}__{method}__seed{seed}__{args.steps}.safetensors"
                net, _ = load_translation(str(work / name))
                outs = []
                for images, (x, src_colour) in held.items():
                    with torch.no_grad():
                        y = net(x)
                    outs.append(torch.cat(list(y[_tiles(len(y))]), -1))
                    s_in, c_in = judge(x)
                    s_out, c_out = judge(y)
                    pred_in, pred_out = (s_in, s_out) if kind == "shape" else (c_in, c_out)
                    fg_in, fg_out = (x < 0.9).any(1), (y < 0.9).any(1)
                    row = {"task": task, "method": method, "images": images, "seed": seed,
                           "target_before": float((pred_in == target_idx).float().mean()),
                           "target_after": float((pred_out == target_idx).float().mean()),
                           "silhouette_iou": float(((fg_in & fg_out).flatten(1).sum(1) /
                                                    (fg_in | fg_out).flatten(1).sum(1).clamp_min(1)).mean()),
                           "colour_kept": float((c_out == src_colour).float().mean()),
                           "background_change": float((y - x).abs().permute(0, 2, 3, 1)[~fg_in].mean()),
                           "train_s": train_s.get(name)}
                    per_seed.append(row)
                if seed == args.seeds[0]:
                    task_fig[method] = torch.cat(outs, -1)
        figure_rows.append(task_fig)

    metrics = ["target_before", "target_after", "silhouette_iou", "colour_kept", "background_change"]
    rows = []
    for task in args.tasks:
        for method in args.methods:
            for images in ("seen shape", "unseen shape"):
                rs = [r for r in per_seed if (r["task"], r["method"], r["images"]) == (task, method, images)]
                if not rs:
                    continue
                row = {"task": task, "method": method, "images": images, "seeds": len(rs)}
                for m in metrics:
                    mu, se = mean_se([r[m] for r in rs])
                    row[m], row[m + "_se"] = mu, se
                rows.append(row)
    shown = [{k: (f"{r[k]:.3f} ± {r[k + '_se']:.3f}" if k in metrics else r[k]) for k in
              ["task", "method", "images", "seeds"] + metrics} for r in rows]
    cols = ["task", "method", "images", "seeds"] + metrics
    head = (f"machine: {machine()['cpu']}, {machine()['cores']} cores; {args.steps} steps per network, seeds "
            f"{args.seeds}, {len(jobs)} trainings in {wall:.0f} s wall with {args.workers} workers "
            f"({sum(secs):.0f} s of training in all); classifier held-out accuracy shape {clf_shape:.3f}, colour "
            f"{clf_colour:.3f}. ± is the standard error over seeds.")
    print("\n" + head)
    print(table(shown, cols))
    path = write_json("translate", {"machine": machine(), "rows": rows, "per_seed": per_seed, "args": vars(args),
                                    "wall_s": wall, "classifier": {"shape": clf_shape, "colour": clf_colour}},
                      args.out)
    print(f"wrote {path}")
    if args.markdown:
        atomic_write_text(Path(args.markdown), head + "\n\n" + table(shown, cols) + "\n")
    if args.figure:
        from dreamlmc.media import save_png

        blocks = [torch.cat([f["inputs"]] + [f[m] for m in args.methods], -2) for f in figure_rows]
        width = max(b.shape[-1] for b in blocks)
        fig = torch.cat([torch.nn.functional.pad(b, (0, width - b.shape[-1]), value=1.0) for b in blocks], -2)
        save_png(torch.nn.functional.interpolate(fig[None], scale_factor=3, mode="nearest")[0], Path(args.figure))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, "bench_translate"))
