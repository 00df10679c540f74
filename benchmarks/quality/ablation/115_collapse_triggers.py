"""Which stored runs TrainConfig.collapse_ratio would send back, and at which step (ablation rows 114-115).

The criterion reads only the training renders' mean opacity (metrics.jsonl) and draws no random numbers, so a run
it does not send back is the same run with or without it; replaying it on a run's trace is exact up to the first
trigger. Usage: python 115_collapse_triggers.py RUN_DIR... [--ratio 0.4] (a run that went back for another reason
is replayed on its kept steps only)."""
import argparse
import json
from pathlib import Path

from dreamlmc.trainer import collapsed, trace_opacity


def first_trigger(run: Path, ratio: float):
    cfg = (run / "config.yaml").read_text()
    ramp = next((float(line.split(":")[1]) for line in cfg.splitlines() if line.strip().startswith("sparsity_ramp:")),
                0.25)
    steps = next((int(line.split(":")[1]) for line in cfg.splitlines() if line.startswith("steps:")), 1000)
    trace = None  # the trainer's own trace and test (TrainConfig.collapse_ratio)
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "opacity" not in r:
            continue
        trace = trace_opacity(trace, r["opacity"], r["step"] / steps >= ramp)
        if collapsed(trace, ratio):
            return (r["step"], *trace)
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--ratio", type=float, default=0.4)
    a = ap.parse_args()
    for run in a.runs:
        t = first_trigger(run, a.ratio)
        print(run.name, "no trigger" if t is None else f"trigger at step {t[0]} (opacity {t[1]:.2f}, peak {t[2]:.2f})")


if __name__ == "__main__":
    main()
