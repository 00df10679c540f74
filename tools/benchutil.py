"""Shared helpers of the benchmarks: machine description, timing, tables, JSON output."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks"


def machine() -> Dict:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def median_time(fn: Callable[[], None], repeats: int = 10, warmup: int = 2, sync: bool = False) -> float:
    for _ in range(warmup):
        fn()
    times: List[float] = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def table(rows: List[Dict], columns: List[str]) -> str:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    line = "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |"
    sep = "| " + " | ".join("-" * w for w in widths) + " |"
    body = ["| " + " | ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)) + " |" for r in rows]
    return "\n".join([line, sep] + body)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def write_json(name: str, data: Dict, out: Path = None) -> Path:
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    from dreamlmc.io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2))  # an interrupted benchmark never leaves half a file
    return path


def world_classifier(resolution: int = 32):
    """The world's ground-truth classifier (dreamlmc.shapes.classifier; deterministic), trained once and cached in
    ~/.cache/dreamlmc -> (net, held-out shape accuracy, held-out colour accuracy)."""
    from safetensors.torch import load_file, save_file

    from dreamlmc.shapes.classifier import Classifier, train_classifier

    path = Path.home() / ".cache" / "dreamlmc" / f"world_classifier_{resolution}.safetensors"
    if path.exists():
        net = Classifier()
        state = load_file(str(path))
        acc = state.pop("_accuracy")
        net.load_state_dict(state)
        return net.eval(), float(acc[0]), float(acc[1])
    net, acc_shape, acc_colour = train_classifier(resolution)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    state["_accuracy"] = torch.tensor([acc_shape, acc_colour])
    from dreamlmc.io import atomic_write

    atomic_write(path, lambda p: save_file(state, str(p)))
    return net, acc_shape, acc_colour


def mean_se(xs) -> tuple:
    """(mean, standard error) of a list of per-seed values (error 0 for a single value)."""
    return statistics.fmean(xs), (statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else 0.0)


def run_cli(main: Callable[[], int], name: str) -> int:
    """A tool's entry point: a DreamlmcError (bad arguments, missing files, bad overrides) is one line on stderr
    and exit status 2, not a traceback."""
    import sys

    from dreamlmc.errors import DreamlmcError

    try:
        return main()
    except DreamlmcError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 2
