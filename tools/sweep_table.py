"""One table for a sweep of bench_quality cells: each cell's mean ± standard error over its runs, and its IoU
difference to a base cell paired by (prompt, seed), so a switch is judged against the spread of the seeds.

    python tools/sweep_table.py --cell "lmc λ=1=/path/results.json:lmc-sds" --cell "λ=3=/other/results.json" \
        --base "lmc λ=1" --chosen "λ=3" --prompts "a red cube" "a purple torus" --out benchmarks/quality/lmc_sweep

A cell is LABEL=RESULTS_JSON[:KIND] (KIND picks one guidance kind of a results.json that holds two). Writes
OUT/results.json and OUT/results.md and prints the table."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dreamlmc.io import atomic_write_text  # noqa: E402
from tools.benchutil import mean_se, table, write_json  # noqa: E402

METRICS = ("iou", "chamfer", "normal_consistency", "delta_e")


def load_cell(spec: str, prompts: Optional[Sequence[str]]) -> Dict:
    """LABEL=PATH[:KIND] -> {"label", "runs": {(prompt, seed): run}, "overrides", "path"}."""
    label, _, rest = spec.rpartition("=")
    if not label:
        raise SystemExit(f"sweep_table: a cell is LABEL=RESULTS_JSON[:KIND], got {spec!r}")
    path, kind = rest, None
    if ":" in rest and not Path(rest).exists():
        path, kind = rest.rsplit(":", 1)
    data = json.loads(Path(path).read_text())
    runs = {}
    for run in data["runs"].values():
        if kind and run["kind"] != kind:
            continue
        if prompts and run["prompt"] not in prompts:
            continue
        runs[(run["prompt"], run["seed"])] = run
    if not runs:
        raise SystemExit(f"sweep_table: no runs in {path} for kind={kind} prompts={prompts}")
    return {"label": label, "runs": runs, "overrides": data.get("overrides", []), "path": path,
            "file_runs": len(data["runs"]), "file_wall_s": data.get("wall_s")}


def compute(cells: Sequence[Dict]) -> Dict:
    """What the table cost: runs, their training seconds summed (one thread per run: ≈ CPU time), and wall time (each
    source file's bench_quality wall time, in the share of its runs that the table uses)."""
    cpu = sum(r.get("seconds") or 0.0 for c in cells for r in c["runs"].values())
    used: Dict[str, set] = {}
    for c in cells:
        used.setdefault(c["path"], set()).update((k, r.get("kind")) for k, r in c["runs"].items())
    files = {c["path"]: c for c in cells}
    wall = sum((files[p]["file_wall_s"] or 0.0) * len(keys) / max(1, files[p]["file_runs"])
               for p, keys in used.items())
    return {"runs": sum(len(c["runs"]) for c in cells), "cpu_s": cpu, "wall_s": wall}


def summarise(cell: Dict, base: Optional[Dict]) -> Dict:
    runs = list(cell["runs"].values())
    row = {"cell": cell["label"], "runs": len(runs)}
    for m in METRICS:
        vals = [r[m] if r.get(m) is not None else (0.0 if m == "iou" else None) for r in runs]
        vals = [v for v in vals if v is not None]
        if vals:
            mean, se = mean_se(vals)
            row[m] = f"{mean:.3f} ± {se:.3f}" if m != "delta_e" else f"{mean:.1f} ± {se:.1f}"
            row[m + "_mean"], row[m + "_se"] = mean, se
    holes = [r.get("hole") for r in runs if "torus" in r["prompt"]]
    row["torus holes"] = f"{sum(bool(h) for h in holes)}/{len(holes)}" if holes else ""
    row["shape ok"] = f"{sum(int(r.get('shape_correct') or 0) for r in runs)}/{len(runs)}"
    secs = [r["seconds"] for r in runs if r.get("seconds")]
    row["s/run"] = round(mean_se(secs)[0]) if secs else None
    if base is not None and base is not cell:
        keys = sorted(set(cell["runs"]) & set(base["runs"]))
        diffs = [(cell["runs"][k].get("iou") or 0.0) - (base["runs"][k].get("iou") or 0.0) for k in keys]
        if len(diffs) > 1:
            d, se = mean_se(diffs)
            row["ΔIoU vs base (paired)"] = f"{d:+.3f} ± {se:.3f}"
            row["delta_iou"], row["delta_iou_se"] = d, se
            row["verdict"] = "better" if d > 2 * se else "worse" if d < -2 * se else "within 2 SE"
    return row


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", action="append", required=True, help="LABEL=RESULTS_JSON[:KIND]")
    ap.add_argument("--base", required=True, help="label of the cell the others are paired against")
    ap.add_argument("--chosen", default=None, help="label of the cell chosen as the default (marked)")
    ap.add_argument("--prompts", nargs="+", default=None, help="only these prompts (the harness)")
    ap.add_argument("--title", default="LMC-SDS switches")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    cells = [load_cell(s, args.prompts) for s in args.cell]
    by_label = {c["label"]: c for c in cells}
    if args.base not in by_label:
        raise SystemExit(f"sweep_table: --base {args.base!r} is not a cell label")
    base = by_label[args.base]
    rows = [summarise(c, base) for c in cells]
    for r in rows:
        if r["cell"] == args.chosen:
            r["cell"] = f"**{r['cell']}** (chosen)"
    cols = ["cell", "runs", "iou", "ΔIoU vs base (paired)", "verdict", "torus holes", "shape ok", "chamfer",
            "normal_consistency", "delta_e", "s/run"]
    md = table(rows, cols)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    prompts = args.prompts or sorted({k[0] for c in cells for k in c["runs"]})
    cost = compute(cells)
    cost_line = (f"Compute: {cost['runs']} runs, {cost['cpu_s'] / 3600:.1f} h of training on one thread each (≈ CPU "
                 f"time), {cost['wall_s'] / 3600:.1f} h of wall time (the cells' bench_quality wall times).")
    print(cost_line)
    atomic_write_text(
        args.out / "results.md", f"# {args.title}\n\nPrompts: {', '.join(prompts)}; ± = standard error over runs "
        f"(prompt × seed); ΔIoU paired by (prompt, seed) against `{args.base}`; 'better'/'worse' when the paired difference is more "
        f"than 2 SE from 0.\n\n{md}\n\n{cost_line}\n")
    write_json("lmc_sweep", {"base": args.base, "chosen": args.chosen, "prompts": prompts,
                             "cells": [{"label": c["label"], "source": c["path"], "overrides": c["overrides"]}
                                       for c in cells], "rows": rows, "compute": cost}, args.out / "results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
