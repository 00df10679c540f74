"""`dreamlmc batch`: many prompts, many runs, fanned out over Ray.

Each (prompt, seed, ε seed) is one Ray task that calls exactly `dreamlmc train` (the same function, the same
arguments) into its own run folder DIR/<slug>/, so a batch run is bit for bit the single run with those arguments
at the same thread count. The batch is resumable (finished runs are skipped, interrupted ones resumed from their
checkpoints), failures are isolated (one run's error is recorded and the others go on), and at the end it writes
DIR/summary.json, DIR/summary.csv and DIR/contact_sheet.png.

Without --address a local Ray runtime is started (and stopped) here; with one, the tasks go to that cluster, whose
nodes must see DIR at the same path (a shared filesystem).
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from dreamlmc.errors import DreamlmcError
from dreamlmc.io import atomic_write, atomic_write_text

from dreamlmc.runs import DONE  # noqa: E402  (the one marker of a finished run)
# keys a YAML entry may carry besides `prompt`, and the train flag each becomes
ENTRY_FLAGS = {"guidance": "--guidance", "guidance_scale": "--guidance-scale", "seed": "--seed", "steps": "--steps",
               "model": "--model"}
ENTRY_KEYS = {"prompt", "seeds", "eps_seeds", "overrides", "name"} | set(ENTRY_FLAGS)


@dataclass
class Entry:
    """One line of a prompts file: a prompt plus its own settings."""

    prompt: str
    flags: Dict[str, object] = field(default_factory=dict)  # ENTRY_FLAGS keys
    seeds: Optional[List[int]] = None
    eps_seeds: Optional[List[int]] = None
    overrides: List[str] = field(default_factory=list)
    name: Optional[str] = None
    where: str = ""  # "prompts.txt:3", for messages


@dataclass
class RunSpec:
    """One run of the batch: its folder name and the `dreamlmc train` arguments (without --out)."""

    slug: str
    prompt: str
    seed: Optional[int]
    eps_seed: Optional[int]
    argv: List[str]
    where: str = ""


# ------------------------------------------------------------------------------------------------ prompts files

def load_entries(path: Path) -> List[Entry]:
    """A text file (one prompt per line, '#' comments and blank lines ignored) or a YAML file (a list whose items are
    prompts or mappings with `prompt` and optional guidance, guidance_scale, seed, seeds, eps_seeds, steps, model,
    overrides (list of key=value, or a mapping of dotted keys), name). Raises DreamlmcError, naming the line."""
    path = Path(path)
    if not path.exists():
        raise DreamlmcError(f"prompts file {path} does not exist")
    if path.is_dir():
        raise DreamlmcError(f"prompts file {path} is a folder")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DreamlmcError(f"prompts file {path} cannot be read ({getattr(e, 'strerror', None) or type(e).__name__})")
    if path.suffix.lower() in (".yaml", ".yml"):
        entries = _yaml_entries(path, text)
    else:
        entries = []
        for i, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if line:
                entries.append(Entry(prompt=line, where=f"{path.name}:{i}"))
    if not entries:
        raise DreamlmcError(f"prompts file {path} holds no prompts")
    return entries


def _yaml_entries(path: Path, text: str) -> List[Entry]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise DreamlmcError(f"prompts file {path} is not valid YAML: {str(e).splitlines()[0]}")
    if data is None:
        return []
    if isinstance(data, dict) and "prompts" in data:
        data = data["prompts"]
    if not isinstance(data, list):
        raise DreamlmcError(f"prompts file {path} must hold a list of prompts (strings or mappings with 'prompt')")
    entries = []
    for i, item in enumerate(data, 1):
        where = f"{path.name} entry {i}"
        if isinstance(item, str):
            entries.append(Entry(prompt=item, where=where))
            continue
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise DreamlmcError(f"{where}: each entry is a prompt string or a mapping with a 'prompt' string")
        unknown = set(item) - ENTRY_KEYS
        if unknown:
            raise DreamlmcError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; an entry may have "
                                f"{', '.join(sorted(ENTRY_KEYS))}")
        e = Entry(prompt=item["prompt"], where=where, name=item.get("name"))
        e.flags = {k: item[k] for k in ENTRY_FLAGS if k in item}
        for key in ("seeds", "eps_seeds"):
            if key in item:
                v = item[key]
                v = [v] if isinstance(v, int) and not isinstance(v, bool) else v
                if not isinstance(v, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in v) \
                        or not v:
                    raise DreamlmcError(f"{where}: {key} must be an integer or a non-empty list of integers")
                setattr(e, key, v)
        ov = item.get("overrides", [])
        if isinstance(ov, dict):
            ov = [f"{k}={json.dumps(v)}" for k, v in ov.items()]
        if not isinstance(ov, list) or not all(isinstance(o, str) for o in ov):
            raise DreamlmcError(f"{where}: overrides must be a list of key=value strings or a mapping")
        e.overrides = ov
        entries.append(e)
    return entries


def slugify(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:60] or "run"


def expand(entries: Sequence[Entry], variations: int = 0) -> List[RunSpec]:
    """Entries -> runs: one per seed (the entry's seeds, else its seed or the config's) and per ε seed (the entry's
    eps_seeds, else 0..variations-1 with --variations, else the config's ε)."""
    runs: List[RunSpec] = []
    used: Dict[str, int] = {}
    for e in entries:
        seeds = e.seeds or [e.flags.get("seed")]
        eps_seeds = e.eps_seeds or (list(range(variations)) if variations else [None])
        for sd in seeds:
            for ep in eps_seeds:
                argv = ["--prompt", e.prompt]
                for k, flag in ENTRY_FLAGS.items():
                    if k in e.flags and k != "seed":
                        argv += [flag, str(e.flags[k])]
                if sd is not None:
                    argv += ["--seed", str(sd)]
                if ep is not None:
                    argv += ["--fixed-eps", "--eps-seed", str(ep)]
                base = e.name or slugify(e.prompt)
                slug = base + (f"_seed{sd}" if len(seeds) > 1 or e.seeds else "") + \
                    (f"_eps{ep}" if ep is not None else "")
                n = used.get(slug, 0)
                used[slug] = n + 1
                if n:
                    slug = f"{slug}_{n + 1}"
                runs.append(RunSpec(slug, e.prompt, sd, ep, argv + list(e.overrides), e.where))
    return runs


def preflight(runs: Sequence[RunSpec], presets: Sequence[str], overrides: Sequence[str]) -> Dict[str, str]:
    """Check every run before any work starts. A prompt the built-in prior cannot make is an error for the whole
    batch (DreamlmcError); a run whose settings do not resolve is returned as {slug: one-line error} (it fails
    alone, the others go on)."""
    import contextlib

    from dreamlmc.cli import _load_presets, _train_overrides, build_parser, parse_command
    from dreamlmc.guidance.backends import check_prompt
    from dreamlmc.trainer import resolve_config

    parser = build_parser()
    preset_data = _load_presets(list(presets))
    failed = {}
    for r in runs:
        usage = io.StringIO()
        try:
            with contextlib.redirect_stderr(usage):
                args = parse_command(parser, ["train"] + r.argv + ["--out", "x"] + list(overrides))
            cfg = resolve_config(preset_data, _train_overrides(args) + list(args.overrides))
        except SystemExit:
            msg = usage.getvalue().strip().splitlines()
            failed[r.slug] = f"{r.where}: {msg[-1].replace('dreamlmc: error: ', '') if msg else 'bad arguments'}"
            continue
        except DreamlmcError as e:
            failed[r.slug] = f"{r.where}: {e}"
            continue
        try:
            check_prompt(cfg.model, r.prompt)  # the backend's check, without loading its weights
        except DreamlmcError as e:
            raise DreamlmcError(f"{r.where}: {e}")
    return failed


# ------------------------------------------------------------------------------------------------ one run (a task)

def run_one(argv: List[str], out: str, threads: int, presets: Sequence[str] = (), overrides: Sequence[str] = (),
            evaluate: bool = True) -> Dict:
    """Train one run exactly as `dreamlmc train` would (skip it when finished, resume it when interrupted), then its
    world metrics where the prompt belongs to the built-in world. Never raises: returns a status record."""
    import resource

    import torch

    from dreamlmc.cli import main as cli

    torch.set_num_threads(max(1, threads))
    out_p = Path(out)
    t0 = time.time()
    rec: Dict = {"status": "ok", "error": None, "run_dir": str(out_p), "started": t0}
    skipped = (out_p / DONE).exists()
    if not skipped:
        config_flags = sum((["--config", p] for p in presets), [])
        if (out_p / "checkpoints" / "last.safetensors").exists() and (out_p / "config.yaml").exists():
            cmd = ["train", "--resume", str(out_p), "--quiet"]
            rec["resumed"] = True
        else:
            cmd = ["train"] + list(argv) + config_flags + ["--out", str(out_p), "--quiet", "--force"] + list(overrides)
        err = io.StringIO()
        from contextlib import redirect_stderr

        try:
            with redirect_stderr(err):
                code = cli(cmd)
        except SystemExit as e:  # a signal during training: the trainer checkpointed and asked to exit
            code = e.code if isinstance(e.code, int) else 1
        except BaseException as e:  # noqa: BLE001 - a bug in one run must not take the batch down
            code, err = 1, io.StringIO(f"dreamlmc: error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        if code != 0:
            lines = [l for l in err.getvalue().splitlines() if l.strip()]
            msg = next((l for l in reversed(lines) if l.startswith("dreamlmc:")), lines[-1] if lines else "")
            rec.update(status="interrupted" if code == 130 else "failed",
                       error=msg.replace("dreamlmc: error: ", "") or f"exit status {code}")
    rec["skipped"] = skipped
    rec["seconds"] = _run_seconds(out_p) if rec["status"] == "ok" else time.time() - t0
    rec["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    rec["finished"] = time.time()
    if rec["status"] == "ok":
        rec["outputs"] = {k: str(out_p / n) for k, n in (("mesh", "model.glb"), ("preview", "preview.png"))
                          if (out_p / n).exists()}
        turntable = [p for p in (out_p / "turntable.mp4", out_p / "turntable.gif") if p.exists()]
        if turntable:
            rec["outputs"]["turntable"] = str(turntable[0])
        if evaluate:
            rec["metrics"] = _world_metrics(out_p)
    return rec


def _run_seconds(run: Path) -> Optional[float]:
    try:
        words = (run / DONE).read_text().split()
        return float(words[words.index("in") + 1])
    except (OSError, ValueError, IndexError):
        return None


def _world_metrics(run: Path) -> Optional[Dict]:
    """Quality against ground truth where the run's prior has a world with ground truth (the built-in prior) and
    the prompt names a colour and a shape of it; None otherwise."""
    from dreamlmc.config import load_yaml
    from dreamlmc.guidance.backends import backend_class

    try:
        cfg = load_yaml(run / "config.yaml")
        world = backend_class(cfg.get("model", "builtin")).world()
        if world is None:
            return None
        parts = world.grammar.parse_prompt(cfg.get("prompt", ""))
        if parts["shape"] is None or parts["colour"] is None:
            return None
        m = world.metrics.evaluate_run(run, export=False)
        return {k: m[k] for k in ("iou", "nearest", "shape_correct", "hole", "chamfer", "normal_consistency",
                                  "delta_e")}
    except DreamlmcError:
        return None


# ------------------------------------------------------------------------------------------------ the batch

def default_workers(cpus: int) -> int:
    """One run per pair of cores (at least one)."""
    return max(1, cpus // 2)


def run_batch(runs: Sequence[RunSpec], out: Path, presets: Sequence[str] = (), overrides: Sequence[str] = (),
              workers: Optional[int] = None, cpus_per_run: Optional[int] = None, address: Optional[str] = None,
              progress: bool = True, evaluate: bool = True, preflight_failed: Optional[Dict[str, str]] = None,
              log: Callable[[str], None] = print) -> Dict:
    """Run every RunSpec as a Ray task into out/<slug>; returns the summary (also written to out/)."""
    try:
        import ray
    except ImportError:
        raise DreamlmcError("dreamlmc batch needs Ray: pip install 'ray==2.60.0' (or pip install -e '.[batch]')")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    preflight_failed = dict(preflight_failed or {})
    t0 = time.time()
    started_here = False
    if not ray.is_initialized():
        cpus = os.cpu_count() or 1
        init = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if address:
            init["address"] = address
        else:
            workers = workers or default_workers(cpus)
            init["num_cpus"] = max(workers, cpus)
        try:
            ray.init(**init)
        except Exception as e:  # noqa: BLE001 - Ray's own errors are many; one line says enough
            raise DreamlmcError(f"could not start Ray{' at ' + address if address else ''}: "
                                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}")
        started_here = True
    total_cpus = int(ray.cluster_resources().get("CPU", 1))
    workers = workers or default_workers(total_cpus)
    cpus_per_run = cpus_per_run or max(1, total_cpus // workers)
    # one task per run, each in a fresh worker process (max_calls=1): clean state and its own peak RSS
    task = ray.remote(num_cpus=cpus_per_run, max_retries=0, max_calls=1)(run_one)
    results: Dict[str, Dict] = {}
    for r in runs:
        if r.slug in preflight_failed:
            results[r.slug] = {"status": "failed", "error": preflight_failed[r.slug], "run_dir": str(out / r.slug),
                               "skipped": False, "seconds": 0.0}
    # at most `workers` runs in flight: Ray alone would start one per cpus_per_run cores (measured: --workers 1
    # --cpus-per-run 1 ran two at once on 2 cores)
    queue = [r for r in runs if r.slug not in results]
    pending = {}

    def submit() -> None:
        while queue and len(pending) < workers:
            r = queue.pop(0)
            ref = task.remote(r.argv, str(out / r.slug), cpus_per_run, list(presets), list(overrides), evaluate)
            pending[ref] = r

    submit()
    from tqdm import tqdm

    bar = tqdm(total=len(runs), initial=len(results), disable=not progress, desc="batch", unit="run",
               dynamic_ncols=True)
    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while pending and stop["signal"] is None:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in ready:
                r = pending.pop(ref)
                try:
                    results[r.slug] = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - a worker killed, out of memory, ...
                    results[r.slug] = {"status": "failed", "run_dir": str(out / r.slug), "skipped": False,
                                       "error": f"the worker died ({type(e).__name__})", "seconds": None}
                if results[r.slug]["status"] != "ok" and progress:
                    bar.write(f"failed: {r.slug}: {results[r.slug]['error']}")
                bar.update(1)
            submit()
            failed = sum(v["status"] != "ok" for v in results.values())
            bar.set_postfix(done=len(results) - failed, failed=failed, running=len(pending),
                            refresh=False)
        if stop["signal"] is not None:
            log(f"batch: stopping ({signal.Signals(stop['signal']).name}); running runs checkpoint, finished runs "
                "are kept; re-run the same command to continue")
            for ref in pending:
                ray.cancel(ref)  # KeyboardInterrupt in the task: the trainer checkpoints and exits
            deadline = time.time() + 30
            while pending and time.time() < deadline:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=1.0)
                for ref in ready:
                    r = pending.pop(ref)
                    try:
                        results[r.slug] = ray.get(ref)
                    except Exception:  # noqa: BLE001
                        results[r.slug] = {"status": "interrupted", "run_dir": str(out / r.slug), "skipped": False,
                                           "error": "stopped", "seconds": None}
            for r in list(pending.values()) + queue:
                results[r.slug] = {"status": "interrupted", "run_dir": str(out / r.slug), "skipped": False,
                                   "error": "stopped", "seconds": None}
    finally:
        bar.close()
        for s, h in old.items():
            signal.signal(s, h)
        if started_here:
            ray.shutdown()
    summary = write_summary(runs, results, out, time.time() - t0, workers, cpus_per_run)
    summary["interrupted_by"] = signal.Signals(stop["signal"]).name if stop["signal"] else None
    from dreamlmc.report import finished_runs, write_index

    if finished_runs(out):
        write_index(out, summary)
    return summary


SUMMARY_COLUMNS = ["slug", "prompt", "seed", "eps_seed", "status", "error", "seconds", "peak_rss_gib", "mesh",
                   "preview", "turntable", "iou", "nearest", "shape_correct", "hole", "chamfer",
                   "normal_consistency", "delta_e"]


def write_summary(runs: Sequence[RunSpec], results: Dict[str, Dict], out: Path, wall_s: float, workers: int,
                  cpus_per_run: int) -> Dict:
    rows = []
    for r in runs:
        res = results.get(r.slug, {"status": "not run"})
        row = {"slug": r.slug, "prompt": r.prompt, "seed": r.seed, "eps_seed": r.eps_seed,
               "status": res.get("status"), "error": res.get("error"), "seconds": res.get("seconds"),
               "peak_rss_gib": res.get("peak_rss_gib"), "skipped": res.get("skipped", False),
               "started": res.get("started"), "finished": res.get("finished"),
               "run_dir": res.get("run_dir", str(out / r.slug))}
        row.update(res.get("outputs") or {})
        row.update(res.get("metrics") or {})
        rows.append(row)
    n_failed = sum(r["status"] != "ok" for r in rows)
    summary = {"runs": rows, "total": len(rows), "ok": len(rows) - n_failed, "failed": n_failed,
               "wall_s": wall_s, "workers": workers, "cpus_per_run": cpus_per_run}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in SUMMARY_COLUMNS})
    atomic_write_text(out / "summary.csv", buf.getvalue())
    contact_sheet(rows, out / "contact_sheet.png")
    return summary


def contact_sheet(rows: Sequence[Dict], path: Path, tile: int = 128, cols: int = 6) -> Path:
    """One front view per run (the preview's first shaded tile), labelled with its slug and status."""
    import numpy as np
    from PIL import Image, ImageDraw

    label_h = 14
    n = max(1, len(rows))
    cols = min(cols, n)
    sheet = Image.new("RGB", (cols * tile, ((n + cols - 1) // cols) * (tile + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(rows):
        x, y = (i % cols) * tile, (i // cols) * (tile + label_h)
        preview = row.get("preview")
        if preview and Path(preview).exists():
            img = np.asarray(Image.open(preview).convert("RGB"))
            h = img.shape[0] // 2  # top row: shaded views; the first is the front
            sheet.paste(Image.fromarray(img[:h, :h]).resize((tile, tile)), (x, y))
        else:
            draw.rectangle([x + 4, y + 4, x + tile - 4, y + tile - 4], outline=(200, 60, 60))
            draw.text((x + 8, y + tile // 2 - 6), row.get("status") or "?", fill=(200, 60, 60))
        label = row["slug"] if row.get("status") == "ok" else f"{row['slug']} ({row.get('status')})"
        draw.text((x + 2, y + tile + 1), label[: tile // 6], fill=(0, 0, 0))
    atomic_write(path, lambda p: sheet.save(p, format="PNG"))
    return path
