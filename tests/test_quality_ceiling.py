"""The pipeline's ceiling stays high: fitting the field to ground-truth renders (the quality benchmark's ceiling
mode, a photometric loss instead of guidance) and exporting must reproduce the shape."""
import numpy as np
import pytest

from dreamlmc.runs import prepare_run_dir, run_training
from dreamlmc.shapes.metrics import evaluate_run
from dreamlmc.trainer import resolve_config
from tools.bench_quality import CEILING_DEFAULTS, ceiling_trainer_cls


@pytest.mark.slow
@pytest.mark.parametrize("geometry", ["density", "sdf"])
def test_photometric_fit_of_a_cube_reaches_high_iou(tmp_path, geometry):
    cfg = resolve_config([], CEILING_DEFAULTS + ["prompt=a red cube", "steps=200", "turntable_frames=2",
                                                 "preview_resolution=32", f"renderer.field.geometry={geometry}"])
    out = tmp_path / geometry
    prepare_run_dir(out, force=False)
    run_training(cfg, out, quiet=True, trainer_cls=ceiling_trainer_cls())
    m = evaluate_run(out)
    assert m["nearest"] == "cube"
    assert m["iou"] > 0.8, m
    assert m["chamfer"] < 0.1 and m["normal_consistency"] > 0.85, m


def test_evaluations_are_cached_until_the_run_changes(tmp_path):
    import os

    from tools.bench_quality import cached_evaluation

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ck = run / "checkpoints" / "last.safetensors"
    ck.write_bytes(b"step 10")
    calls = []

    def evaluate(r):
        calls.append(r)
        return {"iou": 0.5 + len(calls)}

    assert cached_evaluation(run, evaluate) == {"iou": 1.5}
    assert cached_evaluation(run, evaluate) == {"iou": 1.5} and len(calls) == 1  # reused
    ck.write_bytes(b"step 20, resumed")  # trained further: scored again
    os.utime(ck, ns=(ck.stat().st_atime_ns, ck.stat().st_mtime_ns + 10**9))
    assert cached_evaluation(run, evaluate) == {"iou": 2.5} and len(calls) == 2
    (run / "quality.json").write_text("{not json")  # a damaged cache is recomputed, not an error
    assert cached_evaluation(run, evaluate) == {"iou": 3.5}


def test_a_scale_override_names_the_scale_the_runs_train_at():
    from tools.bench_quality import effective_scale, train_argv
    from dreamlmc.trainer import resolve_config

    ov = ["guidance.lmc.weight=3", "guidance.guidance_scale=7.5"]
    assert effective_scale(20.0, ov) == 7.5 and effective_scale(20.0, ov[:1]) == 20.0
    job = {"prompt": "a red cube", "kind": "lmc-sds", "scale": 20.0, "seed": 0, "fixed_eps": False, "eps_seed": 0,
           "overrides": ov}
    from dreamlmc.cli import _train_overrides, build_parser  # the table's label must match what `train` resolves

    args = build_parser().parse_args(["train", "--out", "x"] + train_argv(job, 10))
    assert resolve_config([], _train_overrides(args) + list(args.overrides)).guidance.guidance_scale == 7.5


def test_rows_train_at_their_effective_scale_once():
    from tools.bench_quality import guided_methods

    assert guided_methods(["lmc-sds", "sds"], None, []) == [("lmc-sds", 20.0), ("sds", 20.0), ("sds", 7.5)]
    # SDS's two default scales collapse into one row when an override sets the scale (they used to train twice)
    assert guided_methods(["lmc-sds", "sds"], None, ["guidance.guidance_scale=7.5"]) == [("lmc-sds", 7.5),
                                                                                         ("sds", 7.5)]
    assert guided_methods(["sds"], [3.0, 7.5, 3.0], []) == [("sds", 3.0), ("sds", 7.5)]


def test_the_tables_name_the_prior_weights_the_runs_use(tmp_path, capsys):
    from dreamlmc.guidance.backends.builtin import default_weights
    from tools.bench_quality import main, prior_info

    shipped = prior_info()
    assert shipped["weights"] == "builtin" and shipped["fingerprint"]
    other = tmp_path / "tuned.safetensors"
    other.write_bytes(default_weights().read_bytes())
    other.with_suffix(".json").write_bytes(default_weights().with_suffix(".json").read_bytes())  # its card
    assert prior_info(str(other))["weights"] == str(other)
    # the dark-ground prior is named (and keys the run cache) only where white prompts use it (white_on_dark=true)
    assert "dark_fingerprint" not in shipped and "dark_fingerprint" in prior_info("builtin", white_on_dark=True)
    from dreamlmc.guidance.backends.builtin import BuiltinBackend  # its hash, read without loading the network, is
    assert prior_info("builtin", white_on_dark=True)["dark_fingerprint"] == BuiltinBackend("builtin-dark").fingerprint
    # a diffusers model has no ground-truth world: one line and exit 2, before any run starts
    # (after every job, the diversity table's too, is named: naming resolves each job's config)
    assert main(["--prompts", "a red cube", "--seeds", "0", "--diversity-seeds", "2", "--workdir", str(tmp_path / "w"),
                 "--out", str(tmp_path / "o"), "model=some/hub-model"]) == 2
    assert "not a built-in prior" in capsys.readouterr().err and not (tmp_path / "w").exists()


@pytest.mark.parametrize("tool,args", [
    ("bench_quality", ["renderer.nope=1", "--prompts", "a red cube", "--seeds", "0"]),
    ("bench_quality", ["no_equals_sign", "--prompts", "a red cube"]),
    ("bench_prior", ["--judge-epochs", "0"]),
    ("bench_prior", ["--judge-white-fraction", "1.5"]),
    ("make_shapes_data", ["--per-prompt", "0"]),
    ("make_shapes_data", ["--white-fraction", "1.5"]),
    ("make_shapes_data", ["--radius", "0"]),
    ("make_shapes_data", ["--elevation", "30", "-10"]),
])
def test_a_tools_bad_input_is_one_line_and_exit_2(tmp_path, tool, args):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "tools" / f"{tool}.py"
    r = subprocess.run([sys.executable, str(script), *args, "--out", str(tmp_path / "o")], capture_output=True,
                       text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"{tool}: ")
    assert not (tmp_path / "o").exists()  # nothing written


def test_the_ceiling_fits_on_the_shipped_prior_whatever_the_overrides_say():
    """The photometric ceiling fits ground-truth renders on white: white_on_dark=true among the bench's overrides
    (which moves white prompts of the guided runs to the dark-ground prior) must not move the fit."""
    from dreamlmc.trainer import resolve_config
    from tools.bench_quality import ceiling_overrides

    job = {"prompt": "a white cube", "seed": 0, "steps": 10, "overrides": ["white_on_dark=true"]}
    cfg = resolve_config([], ceiling_overrides(job))
    assert cfg.model == "builtin" and cfg.renderer.field.background == "white"
    assert resolve_config([], ["prompt=a white cube", "white_on_dark=true"]).model == "builtin-dark"  # the guided run's


def test_the_ceiling_fits_without_the_opacity_penalty_unless_asked():
    from dreamlmc.trainer import resolve_config
    from tools.bench_quality import ceiling_overrides

    job = {"prompt": "a red cube", "seed": 0, "steps": 10, "overrides": []}
    assert resolve_config([], ["prompt=a red cube"]).renderer.sparsity_weight == 200.0  # the guided default's
    assert resolve_config([], ceiling_overrides(job)).renderer.sparsity_weight == 0.0
    asked = dict(job, overrides=["renderer.sparsity_weight=200"])  # the default preset's, measured as such
    assert resolve_config([], ceiling_overrides(asked)).renderer.sparsity_weight == 200.0


def test_runs_are_named_by_their_resolved_config():
    """A cached run is reused only for the settings it trained with: the same settings spelled as overrides share
    the default's run, any other setting (or a changed default) gets another name."""
    from tools.bench_quality import run_name

    job = {"prompt": "a red cube", "kind": "lmc-sds", "scale": 20.0, "seed": 0, "fixed_eps": False, "eps_seed": 0,
           "overrides": [], "steps": 1000}
    spelled = dict(job, overrides=["guidance.guidance_scale_end_factor=0.6", "renderer.orientation_weight=0.1"])
    assert run_name(spelled) == run_name(job)
    for ov in (["renderer.orientation_weight=0.01"], ["guidance.guidance_scale_end=12"], ["guidance.lmc.weight=1"]):
        assert run_name(dict(job, overrides=ov)) != run_name(job), ov
    assert run_name(dict(job, steps=999)) != run_name(job)
    ceiling = dict(job, kind="ceiling", scale=None)
    assert run_name(ceiling) != run_name(dict(ceiling, overrides=["renderer.field.geometry=density"]))


def test_a_code_change_that_moves_every_run_renames_the_cached_runs(monkeypatch):
    import tools.bench_quality as bq
    from dreamlmc import trainer

    job = {"prompt": "a red cube", "kind": "lmc-sds", "scale": 20.0, "seed": 0, "fixed_eps": False, "eps_seed": 0,
           "overrides": [], "steps": 1000}
    now = bq.run_name(job)
    bq._config_tag.cache_clear()
    monkeypatch.setattr(trainer, "RESULTS_VERSION", trainer.RESULTS_VERSION + 1)
    assert bq.run_name(job) != now
    bq._config_tag.cache_clear()


def test_prior_data_from_below_records_its_elevations(tmp_path):
    """make_shapes_data --elevation draws the data set's cameras in that band, stores the band, and a fine-tune's
    card names it in the command that reproduces the weights (the default band adds nothing)."""
    import json

    from dreamlmc.cameras import CameraConfig
    from dreamlmc.shapes.data import make_dataset
    from tools.train_prior import _training_command

    data = make_dataset(1, 8, seed=0, progress=False, camera=CameraConfig(elevation_range=(-45.0, -20.0)))
    assert data["elevation"].min() >= -45.0 and data["elevation"].max() <= -20.0
    assert list(data["elevation_range"]) == [-45.0, -20.0]
    (tmp_path / "init.json").write_text(json.dumps({"weights": "prior.safetensors"}))
    (tmp_path / "data.json").write_text(json.dumps({"elevation_range": [-45.0, 45.0], "lr": 2e-4}))
    cmd = _training_command(tmp_path)
    assert "make_shapes_data.py --elevation -45 45 --out DATA" in cmd and "--data DATA" in cmd
    (tmp_path / "data.json").write_text(json.dumps({"elevation_range": list(CameraConfig().elevation_range)}))
    assert "--elevation" not in _training_command(tmp_path)


def test_prior_data_on_dark_greys_records_its_range(tmp_path):
    """make_shapes_data --grey-range draws the non-white backgrounds in that band, stores it, and a fine-tune's card
    names it in the command that reproduces the weights (the default band adds nothing)."""
    import json

    from dreamlmc.shapes.data import make_dataset
    from dreamlmc.shapes.world import GREY_RANGE
    from tools.train_prior import _training_command

    data = make_dataset(2, 8, seed=0, progress=False, white_fraction=0.5, grey_range=(0.2, 0.3))
    bg = data["background"][:, 0]
    grey = bg < 1.0
    assert grey.any() and (~grey).any() and bg[grey].min() >= 0.2 and bg[grey].max() <= 0.3
    assert np.allclose(data["grey_range"], [0.2, 0.3])
    (tmp_path / "init.json").write_text(json.dumps({"weights": "prior.safetensors"}))
    (tmp_path / "data.json").write_text(json.dumps({"white_fraction": 0.5, "grey_range": [0.2, 0.3]}))
    assert "make_shapes_data.py --white-fraction 0.5 --grey-range 0.2 0.3 --out DATA" in _training_command(tmp_path)
    (tmp_path / "data.json").write_text(json.dumps({"white_fraction": 0.5, "grey_range": list(GREY_RANGE)}))
    assert "--grey-range" not in _training_command(tmp_path)
