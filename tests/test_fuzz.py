"""Every config key and CLI flag under invalid and extreme values (hypothesis, fixed seed, bounded examples).

Each value is either rejected at load with a one-line DreamlmcError that names the key, or accepted; an accepted
value then runs a tiny training (two steps at low resolution) that either finishes with finite outputs or stops with
a one-line DreamlmcError (e.g. "no surface" when a legal setting empties the object), never a traceback.

DREAMLMC_FUZZ=long runs the longer local profile (many more examples).
"""
import dataclasses
import json
import math
import os
import typing
from pathlib import Path

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install -e '.[test]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dreamlmc.cli import main  # noqa: E402
from dreamlmc.config import load_yaml  # noqa: E402
from dreamlmc.errors import DreamlmcError  # noqa: E402
from dreamlmc.trainer import TrainConfig, resolve_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUICK = load_yaml(ROOT / "configs" / "quick.yaml")
LONG = os.environ.get("DREAMLMC_FUZZ") == "long"
TINY = ["prompt=\"a red cube\"", "steps=2", "checkpoint_every=1", "resolution=12", "preview_resolution=8",
        "turntable_frames=1", "export.resolution=16"]


def config_keys(cls=TrainConfig, prefix=""):
    """Every leaf key of the train config: (dotted key, type)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += config_keys(tp, key + ".")
        else:
            out.append((key, tp))
    return out


KEYS = config_keys()
NUMBERS = [0, -1, 1, 2, -0.0, 0.5, 1e-30, -1e-30, 1e30, -1e30, 2 ** 31, 2 ** 63, -2 ** 63, 10 ** 12,
           float("nan"), float("inf"), float("-inf")]
OTHERS = ["", "   ", "ünïcødé ☃", "x" * 5000, True, None, [], [2, 1], [1, 2, 3, 4], [float("nan"), 1.0],
          ["a", "b"], {"a": 1}, "auto", "sdf"]
VALUES = NUMBERS + OTHERS


def as_override(key, value) -> str:
    # JSON is valid YAML, except for the non-finite floats, which YAML spells .nan / .inf
    def enc(v):
        if isinstance(v, float) and not math.isfinite(v):
            return ".nan" if math.isnan(v) else (".inf" if v > 0 else "-.inf")
        if isinstance(v, list):
            return "[" + ", ".join(enc(x) for x in v) + "]"
        return json.dumps(v)

    return f"{key}={enc(value)}"


def load(key, value):
    """-> the config, or the DreamlmcError's message (asserted one line and naming the key)."""
    try:
        return resolve_config([QUICK], TINY + [as_override(key, value)])
    except DreamlmcError as e:
        msg = str(e)
        assert "\n" not in msg, msg
        top = key.split(".")[0]
        assert top in msg or key in msg or "prompt" in msg, (key, value, msg)
        return msg


def test_every_key_rejects_bad_values_in_one_line_or_accepts_them():
    """Exhaustive over keys x the extreme values (config loading only: fast)."""
    accepted = 0
    for key, _ in KEYS:
        for value in VALUES:
            r = load(key, value)
            accepted += not isinstance(r, str)
    assert accepted > 0
    # the examples are rejected
    for key, value in (("renderer.num_samples", 0), ("export.resolution", -3),
                       ("renderer.field.hash_grid.num_levels", 0), ("lr", -1)):
        assert isinstance(load(key, value), str), key


def _tiny_run(cfg, tmp: Path):
    from dreamlmc.runs import run_training

    run = tmp / "run"
    run.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_training(cfg, run, quiet=True)
    except DreamlmcError as e:
        assert "\n" not in str(e), str(e)
        return str(e)
    finally:
        torch.set_num_threads(threads)
    from safetensors.torch import load_file

    state = load_file(str(run / "checkpoints" / "last.safetensors"))
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())
    assert (run / "model.glb").exists() and (run / "DONE").exists()
    return None


@settings(max_examples=400 if LONG else 20, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from([k for k, _ in KEYS if k not in ("prompt", "model", "device")]),
       value=st.sampled_from(VALUES))
def test_accepted_values_train_a_tiny_run_to_finite_outputs(tmp_path_factory, key, value):
    cfg = load(key, value)
    if isinstance(cfg, str):
        return  # rejected at load, in one line (checked in load)
    _tiny_run(cfg, tmp_path_factory.mktemp("fuzz"))


FLAG_VALUES = ["0", "-1", "1", "nan", "inf", "-inf", "1e30", "abc", "", "ünï", "99999999999999999999"]
TINY_YAML = ("steps: 2\ncheckpoint_every: 1\nresolution: 12\npreview_resolution: 8\nturntable_frames: 1\n"
             "export: {resolution: 16}\n")
FLAGS = [  # (command with small settings first, the flags fuzzed after them: the last occurrence wins)
    (["train", "--prompt", "a red cube", "--out", "{out}", "--config", "{tiny}", "--quiet"],
     ["--steps", "--seed", "--guidance-scale", "--eps-seed"]),
    (["variations", "--prompt", "a red cube", "--out", "{out}", "--config", "{tiny}", "--count", "1", "--quiet"],
     ["--count", "--steps", "--guidance-scale"]),
    (["sample", "--prompt", "a red cube", "--out", "{out}.png", "--count", "2", "--steps", "2", "--quiet"],
     ["--count", "--steps", "--guidance-scale", "--seed"]),
    (["image", "--prompt", "a red cube", "--out", "{out}.png", "--steps", "2", "--quiet"],
     ["--steps", "--lr", "--l2", "--variations", "--resolution", "--seed", "--guidance-scale"]),
    (["translate", "train", "--prompt", "a red cube", "--source", "a blue cube", "--out", "{out}.safetensors",
      "--steps", "2", "--per-source", "2", "--batch-size", "2", "--quiet"],
     ["--steps", "--batch-size", "--lr", "--l2", "--per-source", "--seed", "--guidance-scale"]),
    (["corrective", "train", "--out", "{out}.safetensors", "--prompts", "a red cube", "--steps", "2",
      "--per-prompt", "2", "--batch-size", "2", "--quiet"], ["--steps", "--batch-size", "--lr", "--per-prompt",
                                                              "--seed"]),
]
FLAG_CASES = [(cmd, flag) for cmd, flags in FLAGS for flag in flags]
LEGAL_FLAG_VALUES = {"--steps": {"0", "1"}, "--count": {"1"}, "--seed": {"0", "1"}, "--eps-seed": {"0", "1"},
                     "--guidance-scale": {"0", "1", "-1"}, "--l2": {"0", "1"}, "--lr": {"1"}, "--variations": {"1"},
                     "--resolution": {"0", "1"}, "--batch-size": {"1"}, "--per-source": {"1"},
                     "--per-prompt": {"1"}}


@settings(max_examples=300 if LONG else 25, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(FLAG_CASES), value=st.sampled_from(FLAG_VALUES))
def test_cli_flags_reject_bad_numbers_in_one_line_or_run(tmp_path_factory, capsys, case, value):
    cmd, flag = case
    capsys.readouterr()  # hypothesis runs many examples in one call: start from empty output
    tmp = tmp_path_factory.mktemp("flag")
    (tmp / "tiny.yaml").write_text(TINY_YAML)
    argv = [a.replace("{out}", str(tmp / "o")).replace("{tiny}", str(tmp / "tiny.yaml")) for a in cmd]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(argv + [f"{flag}={value}"])
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("dreamlmc: error:") or "Traceback" in line]
    if code == 0:
        assert value in LEGAL_FLAG_VALUES.get(flag, set()), f"{flag}={value!r} was accepted"
        assert not errors
    else:
        assert code == 2, (argv, flag, value, code, err)
        assert len(errors) == 1 and err.splitlines()[-1].startswith("dreamlmc: error:"), err
