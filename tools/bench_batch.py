"""How `dreamlmc batch` scales with workers on one machine: the same batch with 1 and with 2 (or more) workers.

Each configuration is a fresh `dreamlmc batch` command (its own local Ray runtime, so start-up is counted) into its
own folder: the 8 prompts of the built-in world, one seed each, `--steps` steps of the default configuration.
Threads per run = cores / workers (the batch runner's default), so 1 worker runs one run at a time on every
core and 2 workers run two runs side by side on one core each. Prints a table and writes JSON.

    python tools/bench_batch.py [--steps 150] [--workers 1 2] [--config PRESET] [--out benchmarks/batch_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(__file__.rsplit("/tools/", 1)[0])
from tools.bench_quality import DEFAULT_PROMPTS  # noqa: E402
from tools.benchutil import RESULTS, machine, table, write_json  # noqa: E402


def run(prompts_file: Path, out: Path, workers: int, steps: int, configs, extra) -> dict:
    cmd = [sys.executable, "-m", "dreamlmc.cli", "batch", str(prompts_file), "--out", str(out), "--workers",
           str(workers), "--quiet"] + sum((["--config", c] for c in configs), []) + [f"steps={steps}"] + list(extra)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench_batch: the batch with {workers} worker(s) failed (exit {proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    summary = json.loads((out / "summary.json").read_text())
    secs = [r["seconds"] for r in summary["runs"] if r.get("seconds")]
    rss = [r["peak_rss_gib"] for r in summary["runs"] if r.get("peak_rss_gib")]
    return {"workers": workers, "threads_per_run": summary["cpus_per_run"], "runs": summary["total"],
            "ok": summary["ok"], "wall_s": round(wall, 1), "median_run_s": round(statistics.median(secs), 1),
            "max_peak_rss_gib": round(max(rss), 2) if rss else None}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=RESULTS / "batch_cpu.json")
    ap.add_argument("--config", action="append", default=[], help="a preset for every run (repeatable)")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        prompts = Path(d) / "prompts.txt"
        prompts.write_text("\n".join(DEFAULT_PROMPTS) + "\n")
        for w in args.workers:
            rows.append(run(prompts, Path(d) / f"w{w}", w, args.steps, args.config, args.overrides))
            print(f"  {w} worker(s): {rows[-1]['wall_s']} s", flush=True)
    base = rows[0]["wall_s"]
    for r in rows:
        r["speedup"] = round(base / r["wall_s"], 2)
    print(table(rows, ["workers", "threads_per_run", "runs", "ok", "wall_s", "median_run_s", "speedup",
                       "max_peak_rss_gib"]))
    path = write_json("batch_cpu", {"machine": machine(), "cpu_count": os.cpu_count(), "steps": args.steps,
                                    "prompts": DEFAULT_PROMPTS, "configs": args.config, "overrides": args.overrides,
                                    "rows": rows}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
