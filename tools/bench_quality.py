"""3D quality against ground truth on the built-in world: guidance methods across scales and seeds, the ceiling of
the pipeline (a photometric fit), and fixed-ε diversity. Every guided run is a real `dreamlmc train` (same preset,
same steps); metrics come from dreamlmc.shapes.metrics.

    python tools/bench_quality.py --quick                        # 3 prompts, 1 seed, LMC-SDS s = 20
    python tools/bench_quality.py --kinds lmc-sds sds --scales 20 7.5 --seeds 0 1 2   # the issue's table
    python tools/bench_quality.py --ceiling --seeds 0 1 2        # fit the same field to ground-truth renders

Per run: volumetric IoU with the analytic shape (best over yaw; the solid is the asset's field above the exported
mesh's iso-level with enclosed cavities filled) and the shape it is nearest to (IoU against all six world shapes);
symmetric Chamfer distance and normal consistency (mean |cos| between the mesh's normals and the true normals at the
nearest true surface points) of the exported mesh; for tori, whether the hole is open; ΔE (CIELAB) of the mesh's
vertex colours against the prompt's albedo; saturation and sharpness of 8 rendered views relative to ground-truth
renders of the same cameras; seconds of training. Rows average over prompts and seeds; the spread (±) is the
standard error over seeds of the per-seed mean. Writes results.json, results.md and grid.png to --out.

Runs are cached in --workdir under a name that includes the method, scale, seed, ε and a hash of the run's fully
resolved config, so a run is reused only for the same settings (also after the preset's defaults change) and the
same prior weights.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

sys.path.append(__file__.rsplit("/tools/", 1)[0])

DEFAULT_PROMPTS = ["a red cube", "a blue sphere", "a green cylinder", "a yellow cone", "a purple torus",
                   "an orange pyramid", "a white cube", "a black sphere"]
QUICK_PROMPTS = ["a red cube", "a purple torus", "a yellow cone"]
METRICS = ["iou", "shape_correct", "chamfer", "normal_consistency", "delta_e", "saturation_ratio",
           "sharpness_ratio", "seconds"]


def job_config(job: Dict):
    """The fully resolved TrainConfig a job's run trains with: for a guided run, what `dreamlmc train` resolves from
    its arguments (train_argv); for a ceiling run, what ceiling_job resolves."""
    from dreamlmc.trainer import resolve_config

    if job["kind"] == "ceiling":
        return resolve_config([], ceiling_overrides(job))
    from dreamlmc.cli import _train_overrides, build_parser

    args = build_parser().parse_args(["train", "--out", "-"] + train_argv(job, job["steps"]))
    return resolve_config([], _train_overrides(args) + list(args.overrides))


def config_tag(job: Dict) -> str:
    """A hash of the job's resolved config: a run is reused only when it trained with the same settings, however
    they were spelled (an override or a default), and never after the preset's defaults changed."""
    return _config_tag(json.dumps(job, sort_keys=True))


@functools.lru_cache(maxsize=None)  # run_name is called many times per job; resolving a config is not free
def _config_tag(job_json: str) -> str:
    from dataclasses import asdict

    from dreamlmc.trainer import RESULTS_VERSION

    # the config and the code's results version (a change that moves every run renames the cached runs, row 116)
    resolved = json.dumps(asdict(job_config(json.loads(job_json))), sort_keys=True, default=str)
    resolved += f"|results_version={RESULTS_VERSION}"
    return hashlib.sha256(resolved.encode()).hexdigest()[:10]


def run_name(job: Dict) -> str:
    p = job["prompt"].replace(" ", "-")
    if job["kind"] == "ceiling":
        return f"{p}__ceiling__seed{job['seed']}__{config_tag(job)}"
    eps = f"eps{job['eps_seed']}" if job["fixed_eps"] else "fresh"
    return f"{p}__{job['kind']}__s{job['scale']:g}__seed{job['seed']}__{eps}__{config_tag(job)}"


# ------------------------------------------------------------------------------------------------ the ceiling

def ceiling_trainer_cls():
    """A Trainer whose objective is a photometric loss against ground-truth renders of the prompt's shape from the
    very cameras, light and shading mode of each step: what the field, renderer and exporter can reach when the
    supervision is perfect. The gap to 1.0 is theirs; the gap between this and a guided run is the guidance's."""
    import torch

    from dreamlmc.shapes import world
    from dreamlmc.trainer import Trainer
    from dreamlmc.shapes.render import render_shapes

    class CeilingTrainer(Trainer):
        def objective(self, out, cams, mode):
            parts = world.parse_prompt(self.cfg.prompt)
            B = cams.rays_o.shape[0]
            sh = self.cfg.renderer.shading
            if mode == "textureless":
                albedo, gt_mode = torch.full((B, 3), sh.textureless_albedo), "lambertian"
            else:
                albedo, gt_mode = torch.tensor([world.COLOURS[parts["colour"]]] * B), mode
            target = render_shapes([parts["shape"]] * B, albedo, cams.to("cpu"), ambient=sh.ambient,
                                   diffuse=sh.diffuse, mode=gt_mode, background=self.ceiling_background(out))
            loss = ((out["rgb"] - target["rgb"].to(out["rgb"])) ** 2).sum() / B
            return {"loss": loss, "photometric": loss.detach()}

        def ceiling_background(self, out):
            # the colour each view was composited on (white, or a random solid colour per training view)
            return out["background"][:, :, 0, 0].detach().cpu()

    return CeilingTrainer


# ------------------------------------------------------------------------------------------------ running

# The opacity penalty exists against the guidance's growth, which a photometric fit does not have; in the fit it only
# empties what the training views never see (the undersides: ablation rows 99 and 113, IoU 0.704 with it, 0.869
# without, on five prompts at the default preset). So the ceiling fits without it unless the overrides set it.
CEILING_DEFAULTS = ["renderer.sparsity_weight=0"]


def ceiling_overrides(job: Dict) -> List[str]:
    # the fit sees ground-truth renders on white, whatever the guided runs' grounds: white_on_dark goes last, after
    # the overrides, so that a white_on_dark=true among them cannot move the fit onto the dark-ground prior
    return ([f"prompt={json.dumps(job['prompt'])}", f"seed={job['seed']}", f"steps={job['steps']}"]
            + CEILING_DEFAULTS + list(job["overrides"]) + ["white_on_dark=false"])


def ceiling_job(args) -> str:
    """One ceiling run (a photometric fit: a Trainer subclass, so not a `dreamlmc train` the batch runner could run)."""
    job, workdir = args
    import torch

    torch.set_num_threads(1)
    out = Path(workdir) / run_name(job)
    if (out / "DONE").exists():
        return str(out)
    from dreamlmc.runs import prepare_run_dir, run_training
    from dreamlmc.trainer import resolve_config

    cfg = resolve_config([], ceiling_overrides(job))
    prepare_run_dir(out, force=True)
    run_training(cfg, out, quiet=True, trainer_cls=ceiling_trainer_cls())
    return str(out)


def effective_scale(scale: float, overrides: List[str]) -> float:
    """The guidance scale a run trains at: an override `guidance.guidance_scale=...` wins over --scales (it comes
    after the --guidance-scale flag in the run's arguments), resolved by the config system as `train` does."""
    from dreamlmc.trainer import resolve_config

    return resolve_config([], [f"guidance.guidance_scale={scale}"] + list(overrides)).guidance.guidance_scale


def guided_methods(kinds: Sequence[str], scales: Optional[Sequence[float]], overrides: List[str]) -> List[tuple]:
    """(kind, scale) per table row, at the scale its runs train at (an override wins over --scales), each once: two
    nominal scales that an override sets to the same value would otherwise train the same runs twice."""
    return list(dict.fromkeys((k, effective_scale(s, overrides)) for k in kinds
                              for s in (scales or ([20.0, 7.5] if k == "sds" else [20.0]))))


def train_argv(job: Dict, steps: int) -> List[str]:
    """The `dreamlmc train` arguments of a guided run (without --out)."""
    argv = ["--prompt", job["prompt"], "--guidance", job["kind"], "--guidance-scale", str(job["scale"]), "--seed",
            str(job["seed"])]
    argv += ["--fixed-eps", "--eps-seed", str(job["eps_seed"])] if job["fixed_eps"] else ["--no-fixed-eps"]
    return argv + [f"steps={steps}"] + list(job["overrides"])


def run_guided(jobs: List[Dict], workdir: Path, steps: int, workers: int) -> Dict[str, Dict]:
    """Every guided run through `dreamlmc batch`'s runner (Ray): finished runs are reused, interrupted ones resumed,
    a failing run is recorded and the others go on. -> {run name: the runner's record}."""
    from dreamlmc.batch import RunSpec, run_batch

    specs = [RunSpec(run_name(j), j["prompt"], j["seed"], j["eps_seed"], train_argv(j, steps)) for j in jobs]
    summary = run_batch(specs, workdir, workers=workers, cpus_per_run=1, evaluate=False, progress=True)
    return {r["slug"]: r for r in summary["runs"]}


def evaluation_key(run: Path) -> str:
    """What an evaluation depends on: the run's last checkpoint (size, mtime) and the code that exports, renders and
    scores it (the metrics, the world, the exporter, the renderer). Any change re-evaluates."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted([*(root / "dreamlmc" / "shapes").glob("*.py"), root / "dreamlmc" / "export.py",
                     *(root / "renderers").glob("*.py")]):
        h.update(f.read_bytes())
    ck = run / "checkpoints" / "last.safetensors"
    st = ck.stat()
    h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def cached_evaluation(run: Path, evaluate) -> Dict:
    """evaluate(run), kept in run/quality.json under evaluation_key(run): a sweep re-scoring the runs it reuses from
    --workdir costs nothing while neither the run nor the scoring code changed."""
    import json

    from dreamlmc.io import atomic_write_text

    path, key = run / "quality.json", evaluation_key(run)
    if path.exists():
        try:
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                return cached["result"]
        except (ValueError, KeyError):
            pass
    result = evaluate(run)
    atomic_write_text(path, json.dumps({"key": key, "result": result}))
    return result


def prior_info(model: str = "builtin", white_on_dark: bool = False) -> Optional[Dict]:
    """The built-in prior's weights the runs use: the shipped ones or a `model=<path>.safetensors` override
    (None: the model is not a built-in prior, whose world the benchmark scores against); with white_on_dark, also
    the dark-ground prior's that white prompts then use."""
    from dreamlmc.guidance.backends import is_builtin
    from dreamlmc.guidance.backends.builtin import BuiltinBackend, dark_weights, weights_fingerprint

    if not is_builtin(model):
        return None
    be = BuiltinBackend(None if model == "builtin" else model)
    info = {"fingerprint": be.fingerprint, "steps": be.prior_card.get("steps"),
            "weights": "builtin" if model == "builtin" else str(be.weights)}
    if model == "builtin" and white_on_dark:  # white prompts train on the dark-ground prior
        info["dark_fingerprint"] = weights_fingerprint(dark_weights())  # its hash only: no second network load
    return info


# ------------------------------------------------------------------------------------------------ tables

def aggregate(runs: List[Dict], seeds: Sequence[int]) -> Dict:
    """Mean over prompts and seeds of each metric; ± the standard error over seeds of the per-seed means."""
    row = {"runs": len(runs)}
    for m in METRICS:
        per_seed = []
        for sd in seeds:
            vals = [r[m] for r in runs if r["seed"] == sd and r.get(m) is not None]
            if vals:
                per_seed.append(float(np.mean(vals)))
        if not per_seed:
            continue
        row[m] = float(np.mean(per_seed))
        row[m + "_se"] = float(np.std(per_seed, ddof=1) / np.sqrt(len(per_seed))) if len(per_seed) > 1 else None
    row["shape_correct_runs"] = f"{int(sum(r['shape_correct'] for r in runs))}/{len(runs)}"
    by_prompt = {}
    for r in runs:
        by_prompt.setdefault(r["prompt"], []).append(r["iou"])
    row["min_prompt_iou"] = float(min(np.mean(v) for v in by_prompt.values()))
    tori = [r["hole"] for r in runs if r.get("hole") is not None]
    row["torus_holes"] = f"{sum(tori)}/{len(tori)}" if tori else None
    return row


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def fmt_pm(row: Dict, m: str, digits: int = 3) -> str:
    if m not in row:
        return ""
    se = row.get(m + "_se")
    return f"{row[m]:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 prompts, 1 seed, LMC-SDS at s = 20 only")
    ap.add_argument("--ceiling", action="store_true", help="photometric fit to ground truth instead of guidance")
    ap.add_argument("--prompts", nargs="+", default=None)
    ap.add_argument("--kinds", nargs="+", default=["lmc-sds", "sds"], choices=["lmc-sds", "sds"],
                    help="overrides (key=value) go before the options, or after --")
    ap.add_argument("--scales", type=float, nargs="+", default=None, help="default 20 (and 7.5 for SDS)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=None, help="default: the preset's")
    ap.add_argument("--diversity-seeds", type=int, default=0, help="ε seeds for the diversity table (0: none)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where runs go (default: ~/.cache/dreamlmc/bench_quality/<built-in prior fingerprint>[-<its "
                         "dark-ground fine-tune's>], so runs are reused only with the same weights)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "benchmarks/quality")
    ap.add_argument("--label", default="", help="a name for this configuration in the tables")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = ap.parse_args(argv)
    from dreamlmc.trainer import resolve_config

    prompts = args.prompts or (QUICK_PROMPTS if args.quick else DEFAULT_PROMPTS)
    seeds = [0] if args.quick else args.seeds
    ov = list(args.overrides)
    preset = resolve_config([], ov)  # what every run starts from: steps, noise and model come from it
    steps = args.steps or preset.steps
    if args.ceiling:
        methods = [("ceiling", None)]
    elif args.quick:
        methods = [("lmc-sds", 20.0)]
    else:
        methods = guided_methods(args.kinds, args.scales, ov)
    fixed = preset.guidance.fixed_eps  # the main runs use the config's noise (default: fresh ε)

    def job(prompt, kind, scale, seed, fixed_eps, eps_seed=0) -> Dict:
        return {"prompt": prompt, "kind": kind, "scale": scale, "seed": seed, "fixed_eps": fixed_eps,
                "eps_seed": eps_seed, "overrides": ov, "steps": steps}

    jobs = [job(p, k, s, sd, fixed) for k, s in methods for p in prompts for sd in seeds]
    div_jobs = {}
    if args.diversity_seeds and not args.ceiling:
        k, s = methods[0]
        div_jobs["fixed_eps_seeds"] = [job(prompts[0], k, s, 0, True, i) for i in range(args.diversity_seeds)]
        div_jobs["fresh_eps_run_seeds"] = [job(prompts[0], k, s, i, False) for i in range(args.diversity_seeds)]
    all_jobs = list({run_name(j): j for j in jobs + sum(div_jobs.values(), [])}.values())
    model = preset.model
    prior = prior_info(model, preset.white_on_dark)
    if prior is None:
        print(f"error: bench_quality scores against the built-in prior's world; model={model} "
              "is not a built-in prior (builtin or a *.safetensors of it)", file=sys.stderr)
        return 2
    if args.workdir is None:
        # runs are reused only with the same weights: both priors' where white prompts use the dark-ground one
        args.workdir = Path.home() / ".cache/dreamlmc/bench_quality" / "-".join(
            prior[k] for k in ("fingerprint", "dark_fingerprint") if k in prior)
    args.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"{len(all_jobs)} runs of {steps} steps with {args.workers} workers -> {args.workdir}", flush=True)
    status = {}
    if args.ceiling:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            for i, out in enumerate(pool.map(ceiling_job, [(j, args.workdir) for j in all_jobs])):
                print(f"  [{i + 1}/{len(all_jobs)}] {Path(out).name} ({time.time() - t0:.0f} s)", flush=True)
    else:
        status = run_guided(all_jobs, args.workdir, steps, args.workers)
        for name, r in status.items():
            if r["status"] != "ok":
                print(f"  failed: {name}: {r['error']}", flush=True)
    t_train = time.time() - t0
    import torch

    # evaluation runs beside other work more often than not; one thread avoids OpenMP's spinning on busy cores
    torch.set_num_threads(1)
    from dreamlmc.shapes import metrics
    from dreamlmc.shapes.metrics import evaluate_run, load_run
    from dreamlmc.io import atomic_write_text
    from tools.benchutil import machine, table, write_json

    per_run = {}
    for j in jobs:
        base = {k: v for k, v in j.items() if k != "overrides"}
        rec = status.get(run_name(j), {"status": "ok"})
        if rec["status"] != "ok":  # a run that failed gives the user nothing: it counts as such
            per_run[run_name(j)] = dict(base, failed=rec.get("error"), iou=0.0, shape_correct=0.0, nearest="(failed)",
                                        chamfer=None, normal_consistency=None, delta_e=None, saturation_ratio=None,
                                        sharpness_ratio=None, seconds=rec.get("seconds"), extent_ratio=[0, 0, 0],
                                        hole=False if "torus" in j["prompt"] else None)
            continue
        per_run[run_name(j)] = dict(base, **cached_evaluation(args.workdir / run_name(j), evaluate_run))
    rows, prompt_rows = [], []
    for k, s in methods:
        sel = [r for r in per_run.values() if r["kind"] == k and r["scale"] == s]
        label = f"{args.label} {k}".strip() + (f" s={s:g}" if s is not None else "")
        rows.append(dict({"method": label}, **aggregate(sel, seeds)))
        for p in prompts:
            ps = [r for r in sel if r["prompt"] == p]
            prompt_rows.append({"method": label, "prompt": p, "iou": float(np.mean([r["iou"] for r in ps])),
                                "iou_per_seed": " ".join(f"{r['iou']:.2f}" for r in ps),
                                "nearest": " ".join(r["nearest"] for r in ps),
                                "chamfer": _mean([r["chamfer"] for r in ps]),
                                "normal_consistency": _mean([r["normal_consistency"] for r in ps]),
                                "delta_e": _mean([r["delta_e"] for r in ps]),
                                "extent": " ".join("x".join(f"{e:.2f}" for e in r["extent_ratio"]) for r in ps)})
    div = {}
    for name, group in div_jobs.items():
        import trimesh

        renders, pts, failed = [], [], 0
        for j in group:
            run = args.workdir / run_name(j)
            if status.get(run_name(j), {"status": "ok"})["status"] != "ok" or not (run / "model.glb").exists():
                failed += 1  # no asset (e.g. the object vanished): not part of the spread
                continue
            tr = load_run(run)
            renders.append(tr.render_views(8, 64)["rgb"])
            p, _ = trimesh.sample.sample_surface(trimesh.load(run / "model.glb", force="mesh"), 3000, seed=0)
            pts.append(np.asarray(p, np.float32))
        div[name] = {"render_l1": metrics.render_diversity(renders) if len(renders) > 1 else None,
                     "mesh_chamfer": metrics.pairwise_mean(pts, metrics.chamfer) if len(pts) > 1 else None,
                     "runs": len(group), "failed": failed}
    # image grid: rows = method x seed, columns = prompts (front view)
    from PIL import Image

    tiles = []
    for k, s in methods:
        for sd in seeds:
            row = []
            for p in prompts:
                j = next(j for j in jobs if j["prompt"] == p and j["kind"] == k and j["scale"] == s and j["seed"] == sd)
                preview = args.workdir / run_name(j) / "preview.png"
                if not preview.exists():  # a failed run: a blank tile
                    row.append(np.full((2 * (row[0].shape[0] // 2 if row else 96), row[0].shape[1] if row else 96, 3),
                                       255, np.uint8))
                    continue
                img = np.asarray(Image.open(preview).convert("RGB"))
                h = img.shape[0] // 2
                row.append(np.concatenate([img[:h, :h], img[h:, :h]], 0))  # shaded over textureless
            tiles.append(np.concatenate(row, 1))
    args.out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(tiles, 0)).save(args.out / "grid.png")
    info = machine()
    shapes = [metrics.world.parse_prompt(p)["shape"] for p in prompts]
    floors = {sh: metrics.chamfer_floor(sh) for sh in set(shapes)}  # once per shape (the cube appears twice)
    floor = float(np.mean([floors[sh] for sh in shapes]))
    show = [dict(r, **{m: fmt_pm(r, m, 1 if m in ("delta_e", "seconds") else 3) for m in METRICS}) for r in rows]
    weights = "Built-in prior" if prior["weights"] == "builtin" else f"Prior weights {prior['weights']}:"
    dark = (f" (white prompts: the dark-ground prior {prior['dark_fingerprint']}, white_on_dark)"
            if "dark_fingerprint" in prior else "")
    md = [f"{weights} {prior['fingerprint']} ({prior['steps']} training steps){dark}, {steps} steps per run, seeds "
          f"{seeds}, prompts: {', '.join(prompts)}. Overrides: {' '.join(ov) or '(none: the default preset)'}"
          + (f"; the ceiling's fit adds {' '.join(CEILING_DEFAULTS)} before them." if args.ceiling else "."),
          f"Machine: {info['cpu']}, {info['cores']} cores; {args.workers} runs in parallel, one thread each; "
          f"wall time {time.time() - t0:.0f} s ({t_train:.0f} s of it training; runs already in --workdir are "
          "reused). ± is the standard error over seeds. Chamfer's floor (a perfect mesh: the ground truth against "
          f"a second sampling of itself), mean over these prompts' shapes: {floor:.3f}.", "",
          table(show, ["method", "runs", "iou", "min_prompt_iou", "shape_correct_runs", "torus_holes", "chamfer",
                       "normal_consistency", "delta_e", "saturation_ratio", "sharpness_ratio", "seconds"]), "",
          table(prompt_rows, ["method", "prompt", "iou", "iou_per_seed", "nearest", "chamfer", "normal_consistency",
                              "delta_e", "extent"]), ""]
    if div:
        md += ["Diversity (one prompt, 8 views): fixed-ε seeds vs fresh noise with different run seeds", "",
               table([dict({"setting": k}, **v) for k, v in div.items()],
                     ["setting", "render_l1", "mesh_chamfer", "runs"]), ""]
    md.append("grid.png: rows = method x seed (in the table's order), columns = prompts; each tile shaded over "
              "textureless.")
    atomic_write_text(args.out / "results.md", "\n".join(md) + "\n")
    write_json("quality", {"machine": info, "steps": steps, "prompts": prompts, "seeds": seeds, "rows": rows,
                           "prompt_rows": prompt_rows, "diversity": div, "runs": per_run, "prior": prior,
                           "overrides": ov, "chamfer_floor": floor, "wall_s": time.time() - t0, "train_s": t_train},
               args.out / "results.json")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    from tools.benchutil import run_cli

    raise SystemExit(run_cli(main, "bench_quality"))
