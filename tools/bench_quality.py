"""3D quality against ground truth on the built-in world: SDS vs LMC-SDS across guidance scales, and fixed-ε
diversity. Every run is a real `dreamlmc train` (same preset, same steps); metrics come from dreamlmc.metrics.

    python tools/bench_quality.py --quick            # ~15 min on the 2-core CPU
    python tools/bench_quality.py                     # the full default sweep (hours; resumable, parallel)

Per run: volumetric IoU with the analytic shape (best over yaw; the solid is the field's density above the exported
mesh's iso-level with enclosed cavities filled, since score distillation leaves interiors unconstrained) and
symmetric Chamfer distance; ΔE (CIELAB) of the mesh's vertex colours against the prompt's albedo;
saturation and sharpness (Laplacian variance) of 8 rendered views relative to ground-truth renders of the same
cameras. Diversity: for one prompt, 4 fixed-ε seeds vs 4 run seeds with fresh noise, mean pairwise render
difference and Chamfer distance. Writes results.json, results.md and grid.png to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.append(__file__.rsplit("/tools/", 1)[0])

DEFAULT_PROMPTS = ["a red cube", "a blue sphere", "a green cylinder", "a yellow cone", "a purple torus",
                   "an orange pyramid", "a white cube", "a black sphere"]
QUICK_PROMPTS = ["a red cube", "a blue sphere", "a yellow cone"]
CHROMATIC_SATURATION = 0.2  # ground-truth saturation above which a saturation ratio is reported


def run_name(job: Dict) -> str:
    p = job["prompt"].replace(" ", "-")
    eps = f"eps{job['eps_seed']}" if job["fixed_eps"] else "fresh"
    return f"{p}__{job['kind']}__s{job['scale']:g}__seed{job['seed']}__{eps}"


def train_job(args) -> str:
    job, workdir, steps, extra = args
    import torch

    torch.set_num_threads(1)
    from dreamlmc.cli import main as cli

    out = Path(workdir) / run_name(job)
    if (out / "DONE").exists():
        return str(out)
    argv = ["train", "--prompt", job["prompt"], "--out", str(out), "--guidance", job["kind"], "--guidance-scale",
            str(job["scale"]), "--seed", str(job["seed"]), "--quiet", "--force", f"steps={steps}"] + list(extra)
    argv += ["--fixed-eps", "--eps-seed", str(job["eps_seed"])] if job["fixed_eps"] else ["--no-fixed-eps"]
    code = cli(argv)
    if code != 0:
        raise RuntimeError(f"run {out} failed with exit code {code}")
    return str(out)


def evaluate(run: Path, prompt: str) -> Dict:
    import torch
    import trimesh

    from dreamlmc import metrics, world
    from dreamlmc.cameras import orbit_cameras
    from dreamlmc.config import load_yaml
    from dreamlmc.export import auto_threshold, density_grid
    from dreamlmc.trainer import Trainer, resolve_config
    from dreamlmc.world_render import render_shapes

    parts = world.parse_prompt(prompt)
    shape, colour = parts["shape"], parts["colour"]
    cfg = resolve_config([load_yaml(run / "config.yaml")], [])
    tr = Trainer(cfg, run, progress=False)
    tr.load_checkpoint()
    tr.export_mesh(run / "model.glb", cfg.export)  # with this version's exporter, whatever made the run
    field = tr.renderer.field.eval()
    with torch.no_grad():
        grid = density_grid(field.density, cfg.export.resolution, cfg.renderer.field.bound)
        level = auto_threshold(grid, 2 * cfg.renderer.field.bound / cfg.export.resolution)

        iou, yaw = metrics.best_yaw_iou(metrics.solid_inside_fn(grid, level, cfg.renderer.field.bound), shape,
                                        n=60_000, yaw_step=5.0)
    mesh = trimesh.load(run / "model.glb", force="mesh")
    pred_pts, _ = trimesh.sample.sample_surface(mesh, 5000, seed=0)
    cd = metrics.chamfer(np.asarray(pred_pts, np.float32), metrics.surface_points_of_shape(shape, 5000, yaw))
    vcols = np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0
    de = float(metrics.delta_e(vcols, np.broadcast_to(np.array(world.COLOURS[colour]), vcols.shape)).mean())
    views = tr.render_views(8, 64)
    cams = orbit_cameras(cfg.camera, 8, 64, 64)
    from dreamlmc.renderers.shading import ShadingConfig

    sh = ShadingConfig()
    gt = render_shapes([shape] * 8, torch.tensor([world.COLOURS[colour]] * 8), cams, ambient=sh.ambient,
                       diffuse=sh.diffuse)
    sat, sat_gt = metrics.saturation(views["rgb"], views["opacity"]), metrics.saturation(gt["rgb"], gt["mask"])
    # A ratio is meaningless for white and black objects (ground-truth saturation ~0): those get the difference only.
    return {"iou": iou, "yaw": yaw, "chamfer": cd, "delta_e": de, "saturation": sat, "saturation_gt": sat_gt,
            "saturation_delta": sat - sat_gt,
            "saturation_ratio": sat / sat_gt if sat_gt >= CHROMATIC_SATURATION else None,
            "sharpness_ratio": metrics.sharpness(views["rgb"]) / max(1e-9, metrics.sharpness(gt["rgb"]))}


def prior_info() -> Dict:
    from dreamlmc.guidance.backends.builtin import BuiltinBackend

    be = BuiltinBackend()
    return {"fingerprint": be.fingerprint, "steps": be.prior_card.get("steps")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--prompts", nargs="+", default=None)
    ap.add_argument("--kinds", nargs="+", default=["sds", "lmc-sds"])
    ap.add_argument("--scales", type=float, nargs="+", default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--diversity-seeds", type=int, default=4)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where runs go (default: ~/.cache/dreamlmc/bench_quality/<built-in prior fingerprint>, so "
                         "runs are reused only with the same weights)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "benchmarks/quality")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = ap.parse_args(argv)
    prompts = args.prompts or (QUICK_PROMPTS if args.quick else DEFAULT_PROMPTS)
    scales = args.scales or ([20.0, 100.0] if args.quick else [7.5, 20.0, 100.0])
    steps = args.steps or (400 if args.quick else 1000)
    ndiv = 2 if args.quick and args.diversity_seeds == 4 else args.diversity_seeds
    jobs = [{"prompt": p, "kind": k, "scale": s, "seed": sd, "fixed_eps": True, "eps_seed": 0}
            for p in prompts for k in args.kinds for s in scales for sd in args.seeds]
    div_prompt, div_scale = prompts[0], 20.0 if 20.0 in scales else scales[0]
    div_fixed = [{"prompt": div_prompt, "kind": "lmc-sds", "scale": div_scale, "seed": 0, "fixed_eps": True,
                  "eps_seed": i} for i in range(ndiv)]
    div_fresh = [{"prompt": div_prompt, "kind": "lmc-sds", "scale": div_scale, "seed": i, "fixed_eps": False,
                  "eps_seed": 0} for i in range(ndiv)]
    all_jobs = list({run_name(j): j for j in jobs + div_fixed + div_fresh}.values())
    prior = prior_info()
    if args.workdir is None:
        args.workdir = Path.home() / ".cache/dreamlmc/bench_quality" / prior["fingerprint"]
    args.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    t_train = None
    print(f"{len(all_jobs)} runs of {steps} steps with {args.workers} workers -> {args.workdir}", flush=True)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for i, out in enumerate(pool.map(train_job, [(j, args.workdir, steps, args.overrides) for j in all_jobs])):
            print(f"  [{i + 1}/{len(all_jobs)}] {Path(out).name} ({time.time() - t0:.0f} s)", flush=True)

    t_train = time.time() - t0
    from dreamlmc import metrics
    from tools.benchutil import machine, table

    per_run = {}
    for j in jobs:
        per_run[run_name(j)] = dict(j, **evaluate(args.workdir / run_name(j), j["prompt"]))
    rows = []
    keys = ["iou", "chamfer", "delta_e", "saturation_delta", "saturation_ratio", "sharpness_ratio"]
    for k in args.kinds:
        for s in scales:
            sel = [r for r in per_run.values() if r["kind"] == k and r["scale"] == s]
            rows.append(dict({"method": k, "scale": s, "runs": len(sel)},
                             **{m: float(np.mean([r[m] for r in sel if r[m] is not None])) for m in keys}))
    div = {}
    for name, group in (("fixed_eps_seeds", div_fixed), ("fresh_eps_run_seeds", div_fresh)):
        renders, pts = [], []
        for j in group:
            run = args.workdir / run_name(j)
            from dreamlmc.config import load_yaml
            from dreamlmc.trainer import Trainer, resolve_config
            import trimesh

            tr = Trainer(resolve_config([load_yaml(run / "config.yaml")], []), run, progress=False)
            tr.load_checkpoint()
            tr.export_mesh(run / "model.glb", tr.cfg.export)
            renders.append(tr.render_views(8, 64)["rgb"])
            p, _ = trimesh.sample.sample_surface(trimesh.load(run / "model.glb", force="mesh"), 3000, seed=0)
            pts.append(np.asarray(p, np.float32))
        div[name] = {"render_l1": metrics.render_diversity(renders),
                     "mesh_chamfer": metrics.pairwise_mean(pts, metrics.chamfer), "runs": len(group)}
    # image grid: rows = method x scale, columns = prompts (front view, 64 px)
    tiles = []
    for k in args.kinds:
        for s in scales:
            row = []
            for p in prompts:
                j = next(j for j in jobs if j["prompt"] == p and j["kind"] == k and j["scale"] == s)
                from PIL import Image

                img = np.asarray(Image.open(args.workdir / run_name(j) / "preview.png").convert("RGB"))
                h = img.shape[0] // 2
                row.append(img[:h, :h])
            tiles.append(np.concatenate(row, 1))
    args.out.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.fromarray(np.concatenate(tiles, 0)).save(args.out / "grid.png")
    info = machine()
    md = [f"Built-in prior {prior['fingerprint']} ({prior['steps']} training steps), {steps} steps per run, seeds {args.seeds}, prompts: {', '.join(prompts)}.",
          f"Machine: {info['cpu']}, {info['cores']} cores; {args.workers} runs in parallel; "
          f"wall time {time.time() - t0:.0f} s ({t_train:.0f} s of it training; runs already in --workdir are "
          "reused).", "",
          table(rows, ["method", "scale", "runs"] + keys), "",
          "Diversity (one prompt, 8 views): fixed-eps seeds vs fresh noise with different run seeds", "",
          table([dict({"setting": k}, **v) for k, v in div.items()], ["setting", "render_l1", "mesh_chamfer", "runs"]),
          "", "grid.png: rows = method x guidance scale (in the table's order), columns = prompts."]
    (args.out / "results.md").write_text("\n".join(md) + "\n")
    (args.out / "results.json").write_text(json.dumps({"machine": info, "steps": steps, "prompts": prompts,
                                                       "rows": rows, "diversity": div, "runs": per_run, "prior": prior,
                                                       "overrides": args.overrides}, indent=2))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
