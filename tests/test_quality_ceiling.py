"""The pipeline's ceiling stays high: fitting the field to ground-truth renders (the quality benchmark's ceiling
mode, a photometric loss instead of guidance) and exporting must reproduce the shape."""
import pytest

from dreamlmc.runs import prepare_run_dir, run_training
from dreamlmc.shapes.metrics import evaluate_run
from dreamlmc.trainer import resolve_config
from tools.bench_quality import ceiling_trainer_cls


@pytest.mark.slow
@pytest.mark.parametrize("geometry", ["density", "sdf"])
def test_photometric_fit_of_a_cube_reaches_high_iou(tmp_path, geometry):
    cfg = resolve_config([], ["prompt=a red cube", "steps=200", "turntable_frames=2", "preview_resolution=32",
                              f"renderer.field.geometry={geometry}"])
    out = tmp_path / geometry
    prepare_run_dir(out, force=False)
    run_training(cfg, out, quiet=True, trainer_cls=ceiling_trainer_cls())
    m = evaluate_run(out)
    assert m["nearest"] == "cube"
    assert m["iou"] > 0.8, m
    assert m["chamfer"] < 0.1 and m["normal_consistency"] > 0.85, m
