"""tools/sweep_table.py: cells paired by (prompt, seed) against a base, verdicts against 2 SE, and the sweep's cost."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.sweep_table import main as sweep_table  # noqa: E402


def _results(path: Path, ious, kind="lmc-sds", wall=100.0, seconds=50.0):
    runs = {f"{p}-{s}-{kind}": {"prompt": p, "seed": s, "kind": kind, "iou": iou, "chamfer": 0.1,
                                "normal_consistency": 0.9, "delta_e": 10.0, "shape_correct": 1.0, "hole": None,
                                "seconds": seconds}
            for (p, s), iou in ious.items()}
    path.write_text(json.dumps({"runs": runs, "overrides": [], "wall_s": wall}))
    return path


def test_paired_verdicts_chosen_mark_and_compute(tmp_path):
    keys = [("a red cube", s) for s in range(3)] + [("a purple torus", s) for s in range(3)]
    base = _results(tmp_path / "base.json", dict(zip(keys, [0.5, 0.6, 0.7, 0.4, 0.5, 0.6])), wall=300.0)
    up = _results(tmp_path / "up.json", dict(zip(keys, [0.6, 0.71, 0.79, 0.52, 0.6, 0.69])), wall=200.0)
    noisy = _results(tmp_path / "noisy.json", dict(zip(keys, [0.8, 0.4, 0.9, 0.2, 0.7, 0.4])), wall=100.0)
    out = tmp_path / "table"
    assert sweep_table(["--cell", f"base={base}", "--cell", f"up={up}", "--cell", f"noisy={noisy}",
                        "--base", "base", "--chosen", "up", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    rows = {r["cell"]: r for r in data["rows"]}
    assert rows["**up** (chosen)"]["verdict"] == "better"
    assert abs(rows["**up** (chosen)"]["delta_iou"] - 0.1017) < 1e-3
    assert rows["noisy"]["verdict"] == "within 2 SE"  # +0.017 mean, but far inside its spread
    assert data["compute"] == {"runs": 18, "cpu_s": 18 * 50.0, "wall_s": 600.0}
    assert "Compute: 18 runs" in (out / "results.md").read_text()


def test_a_shared_results_file_counts_its_wall_time_once_in_the_share_used(tmp_path):
    keys = [("a red cube", s) for s in range(2)]
    both = tmp_path / "both.json"
    runs = {}
    for kind, ious in (("sds", [0.5, 0.6]), ("lmc-sds", [0.6, 0.7])):
        for (p, s), iou in zip(keys, ious):
            runs[f"{p}-{s}-{kind}"] = {"prompt": p, "seed": s, "kind": kind, "iou": iou, "seconds": 10.0}
    runs["other"] = {"prompt": "a blue sphere", "seed": 0, "kind": "sds", "iou": 0.9, "seconds": 10.0}
    both.write_text(json.dumps({"runs": runs, "wall_s": 50.0}))
    out = tmp_path / "t"
    assert sweep_table(["--cell", f"SDS={both}:sds", "--cell", f"LMC={both}:lmc-sds", "--base", "SDS",
                        "--prompts", "a red cube", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["compute"]["runs"] == 4 and abs(data["compute"]["wall_s"] - 40.0) < 1e-9  # 4 of the file's 5 runs
