"""The command line end to end on the built-in prior: outputs, resume, variations, and bad inputs."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dreamlmc.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "quick.yaml")


def train(args, capsys=None):
    code = main(["train", "--config", QUICK, "--quiet"] + args)
    return code


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "red-cube"
    assert main(["train", "--config", QUICK, "--quiet", "--prompt", "a red cube", "--out", str(out)]) == 0
    return out


def test_train_writes_every_output(finished_run):
    out = finished_run
    for name in ["model.glb", "preview.png", "config.yaml", "metrics.jsonl", "checkpoints/last.safetensors", "DONE"]:
        assert (out / name).exists(), name
    assert (out / "turntable.mp4").exists() or (out / "turntable.gif").exists()
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(1, 31))
    assert {"loss", "t", "grad_norm", "seconds", "loss_cond"} <= set(recs[0])
    import trimesh
    from PIL import Image

    mesh = trimesh.load(out / "model.glb", force="mesh")
    assert len(mesh.vertices) > 0 and np.abs(mesh.bounds).max() <= 1.0 + 1e-3
    assert Image.open(out / "preview.png").size == (8 * 32, 2 * 32)


def test_finished_run_is_not_overwritten_without_force(finished_run, capsys):
    before = (finished_run / "model.glb").read_bytes()
    assert train(["--prompt", "a blue cube", "--out", str(finished_run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--force" in err[0]
    assert (finished_run / "model.glb").read_bytes() == before


def test_export_command(finished_run, tmp_path):
    assert main(["export", str(finished_run), "--format", "ply", "--resolution", "40",
                 "--out", str(tmp_path / "m.ply")]) == 0
    assert (tmp_path / "m.ply").stat().st_size > 0


def _final_params(run: Path):
    return load_file(str(run / "checkpoints" / "last.safetensors"))


@pytest.fixture
def one_thread():
    """Bit-exact comparisons need the same summation order: one intra-op thread here and in the child process
    (a multi-threaded CPU backward, e.g. grid_sample's, may accumulate in a different order)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path, one_thread):
    common = ["--prompt", "a green cone", "--seed", "3", "steps=40", "checkpoint_every=5"]
    a = tmp_path / "a"
    assert train(common + ["--out", str(a)]) == 0
    b = tmp_path / "b"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "dreamlmc.cli", "train", "--config", QUICK, "--quiet",
                             "--out", str(b)] + common, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = b / "checkpoints" / "last.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a mid-way checkpoint exists, then kill -9
        if ckpt.exists() and (b / "metrics.jsonl").exists() and \
                len((b / "metrics.jsonl").read_text().splitlines()) >= 12:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (b / "DONE").exists()
    assert train(["--resume", str(b)]) == 0
    pa, pb = _final_params(a), _final_params(b)
    for k in pa:
        if k.startswith("renderer/"):
            torch.testing.assert_close(pa[k], pb[k], rtol=1e-5, atol=1e-6, msg=k)
    steps_b = [json.loads(l)["step"] for l in (b / "metrics.jsonl").read_text().splitlines()]
    assert steps_b == list(range(1, 41))


def test_variations_differ_and_reproduce_train(tmp_path, one_thread):
    out = tmp_path / "vars"
    assert main(["variations", "--config", QUICK, "--quiet", "--prompt", "a red sphere", "--count", "2",
                 "steps=12", "--out", str(out)]) == 0
    assert (out / "variations.png").exists()
    p0, p1 = _final_params(out / "eps0"), _final_params(out / "eps1")
    assert not torch.equal(p0["guidance/noise/eps_star"], p1["guidance/noise/eps_star"])
    key = [k for k in p0 if "encoding.levels.0" in k][0]
    assert not torch.allclose(p0[key], p1[key])
    single = tmp_path / "single"
    assert train(["--prompt", "a red sphere", "steps=12", "--fixed-eps", "--eps-seed", "1", "--out", str(single)]) == 0
    ps = _final_params(single)
    for k in ps:
        if k.startswith("renderer/"):
            assert torch.equal(ps[k], p1[k]), k


@pytest.mark.parametrize("args,needle", [
    (["--prompt", "", "--out", "{tmp}/x"], "empty"),
    (["--prompt", "a red dragon", "--out", "{tmp}/x"], "dragon"),
    (["--prompt", "a red cube", "--model", "{tmp}/no-such-model", "--out", "{tmp}/x"], "no such folder"),
    (["--prompt", "a red cube", "--out", "{tmp}/x", "renderer.no_such_key=1"], "renderer.no_such_key"),
    (["--prompt", "a red cube", "--steps", "-3", "--out", "{tmp}/x"], "steps"),
    (["--prompt", "a red cube", "--out", "/proc/dreamlmc-cannot-write"], "not writable"),
    (["--prompt", "a red cube", "--config", "{tmp}/missing.yaml", "--out", "{tmp}/x"], "does not exist"),
    (["--prompt", "a red cube", "--out", "{tmp}/x", "guidance.kind=dds"], "3D training takes"),
    (["--prompt", "a red cube", "--out", "{tmp}/x", "renderer.field.background_white_prob_end=1"], "background=grey"),
    (["--prompt", "a red cube", "--out", "{tmp}/x", "camera.fine_views=true"], "--fine-views"),  # shipped prior
    (["--prompt", "a red cube", "--out", "{tmp}/x", "camera.overhead_prob=0.2"], "'overhead'"),  # data stop at 45°
    (["--prompt", "a red cube", "--out", "{tmp}/x", "camera.elevation_range=[0,70]"], "'overhead'"),
])
def test_bad_inputs_are_one_line_errors(args, needle, tmp_path, capsys):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert train(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0]


def test_init_from_starts_at_another_runs_field_and_checks_it(finished_run, tmp_path, capsys):
    src = _final_params(finished_run)
    out = tmp_path / "refined"
    assert train(["--prompt", "a red cube", "--out", str(out), "steps=0", f"init_from={finished_run}"]) == 0
    new = _final_params(out)
    keys = [k for k in src if k.startswith("renderer/")]
    assert keys and all(torch.equal(src[k], new[k]) for k in keys)
    fresh = tmp_path / "fresh"  # without it, step 0 is the initial sphere
    assert train(["--prompt", "a red cube", "--out", str(fresh), "steps=0"]) == 0
    assert not all(torch.equal(src[k], _final_params(fresh)[k]) for k in keys)
    capsys.readouterr()
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint")
    for bad, needle in ((tmp_path / "none", "is missing"), (finished_run, "does not fit"), (garbage, "corrupt")):
        extra = ["renderer.field.hash_grid.num_levels=4"] if needle == "does not fit" else []
        assert train(["--prompt", "a red cube", "--out", str(tmp_path / "x"), "--force", "steps=0",
                      f"init_from={bad}", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0]


def test_a_run_that_failed_in_its_set_up_does_not_block_its_folder(tmp_path, capsys):
    from dreamlmc.errors import DreamlmcError
    from dreamlmc.runs import prepare_run_dir

    out = tmp_path / "x"
    assert train(["--prompt", "a red dragon", "--out", str(out)]) == 2
    assert out.is_dir()  # the lock was taken before the prior refused the prompt
    prepare_run_dir(out, force=False)  # the corrected command needs no --force
    (out / "config.yaml").write_text("steps: 3\n")  # anything else still does
    with pytest.raises(DreamlmcError, match="--force"):
        prepare_run_dir(out, force=False)


def test_force_whose_run_fails_in_its_set_up_keeps_the_run_it_would_replace(finished_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for bad in (["init_from=" + str(tmp_path / "none")], ["camera.overhead_prob=0.5"]):
        assert train(["--prompt", "a red cube", "--out", str(run), "--force", *bad]) == 2
        assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
        assert not (tmp_path / ".copy.replaced").exists()
    capsys.readouterr()
    assert train(["--prompt", "a red cube", "--out", str(run), "--force", "steps=2"]) == 0  # a good one replaces it
    assert (run / "DONE").exists() and not (tmp_path / ".copy.replaced").exists()
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 2


def test_variations_with_a_bad_prompt_keep_the_folder_force_would_replace(tmp_path, capsys):
    out = tmp_path / "vars"
    out.mkdir()
    (out / "variations.png").write_bytes(b"earlier")
    assert main(["variations", "--prompt", "a red dragon", "--count", "2", "--out", str(out), "--force"]) == 2
    assert (out / "variations.png").read_bytes() == b"earlier"
    assert "dragon" in capsys.readouterr().err


def test_variations_force_whose_first_run_fails_in_its_set_up_keeps_the_folder(tmp_path, capsys):
    out = tmp_path / "vars"
    (out / "eps0").mkdir(parents=True)
    (out / "variations.png").write_bytes(b"earlier")
    (out / "eps0" / "DONE").write_text("finished\n")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # the prompt is fine, so the old folder is set aside; the first variation's trainer then refuses its start
    assert main(["variations", "--prompt", "a red cube", "--count", "2", "--out", str(out), "--force", "--quiet",
                 f"init_from={tmp_path / 'none'}"]) == 2
    assert "is missing" in capsys.readouterr().err
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not (tmp_path / ".vars.replaced").exists()
    assert main(["variations", "--config", QUICK, "--prompt", "a red cube", "--count", "1", "--out", str(out),
                 "--force", "--quiet", "steps=2"]) == 0  # a good one replaces it
    assert (out / "eps0" / "DONE").read_text() != "finished\n" and not (out / "eps1").exists()
    assert (out / "variations.png").read_bytes() != b"earlier" and not (tmp_path / ".vars.replaced").exists()


def test_variations_force_whose_first_folder_cannot_be_made_keeps_the_folder(tmp_path, capsys, monkeypatch):
    """A failure in eps0's own folder set-up, before its training starts, restores the folder --force set aside."""
    from dreamlmc import runs
    from dreamlmc.errors import DreamlmcError

    out = tmp_path / "vars"
    (out / "eps0").mkdir(parents=True)
    (out / "variations.png").write_bytes(b"earlier")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    real = runs.prepare_run_dir

    def failing_for_eps0(path, force, set_aside=False):
        if Path(path).name == "eps0":
            raise DreamlmcError(f"--out {path} is not writable (test)")
        return real(path, force, set_aside)

    monkeypatch.setattr(runs, "prepare_run_dir", failing_for_eps0)
    assert main(["variations", "--prompt", "a red cube", "--count", "2", "--out", str(out), "--force",
                 "--quiet"]) == 2
    assert "not writable" in capsys.readouterr().err
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not (tmp_path / ".vars.replaced").exists()


def test_corrupt_checkpoint_is_a_clear_error_and_leaves_the_run(finished_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    (run / "DONE").unlink()
    (run / "checkpoints" / "last.safetensors").write_bytes(b"garbage")
    before = (run / "model.glb").read_bytes()
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupt" in err[0]
    assert (run / "model.glb").read_bytes() == before


def test_cli_subprocess_has_no_traceback_on_bad_input(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dreamlmc.cli", "train", "--prompt", "a red dragon", "--out",
                        str(tmp_path / "x")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert subprocess.run([sys.executable, "-m", "dreamlmc.cli", "--help"], capture_output=True).returncode == 0


def test_sample_and_image_commands(tmp_path):
    assert main(["sample", "--prompt", "a blue torus", "--out", str(tmp_path / "s.png"), "--count", "2",
                 "--steps", "3"]) == 0
    assert main(["image", "--prompt", "a red cube", "--out", str(tmp_path / "i.png"), "--steps", "3",
                 "--variations", "2", "--quiet"]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "i.png").size[0] == 2 * Image.open(tmp_path / "i.png").size[1]
    # DDS editing: the input on the left, the edit beside it
    assert main(["image", "--prompt", "a red cube", "--init", str(tmp_path / "s.png"), "--guidance", "dds",
                 "--source-prompt", "a blue torus", "--out", str(tmp_path / "d.png"), "--steps", "3", "--quiet"]) == 0
    assert Image.open(tmp_path / "d.png").size[0] == 2 * Image.open(tmp_path / "d.png").size[1]


@pytest.mark.parametrize("extra, needle", [
    (["--guidance", "dds", "--source-prompt", "a blue cube"], "pass --init"),
    (["--guidance", "dds", "--init", "{img}"], "needs --source-prompt"),
    (["--source-prompt", "a blue cube", "--init", "{img}"], "dds only"),
    (["--guidance", "dds", "--init", "{img}", "--source-prompt", "a blue dragon"], "dragon"),
])
def test_dds_image_inputs_are_one_line_errors(extra, needle, tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (8, 8), (90, 90, 200)).save(tmp_path / "in.png")
    extra = [a.replace("{img}", str(tmp_path / "in.png")) for a in extra]
    assert main(["image", "--prompt", "a red cube", "--out", str(tmp_path / "o.png"), "--quiet"] + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "o.png").exists()


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "dreamlmc.cli", "train", "--config", QUICK, "--quiet", "--out",
                             str(out), "--prompt", "a blue cube", "steps=100000", "checkpoint_every=100000"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "metrics.jsonl").exists() and
                                          len((out / "metrics.jsonl").read_text().splitlines()) >= 5):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    from dreamlmc.checkpoint import checkpoint_state

    meta = checkpoint_state(out / "checkpoints" / "last.safetensors")
    assert meta["step"] >= 5 and not (out / "DONE").exists()


def test_non_finite_steps_are_skipped_then_stop_the_run(tmp_path):
    from dreamlmc.errors import DreamlmcError
    from dreamlmc.trainer import Trainer, resolve_config
    from dreamlmc.config import load_yaml

    cfg = resolve_config([load_yaml(Path(QUICK))], ["prompt=a red cube", "max_bad_steps=3"])
    tr = Trainer(cfg, tmp_path, progress=False)
    real = tr.guidance.__class__.__call__
    calls = {"n": 0}

    def flaky(self, images, *a, **k):
        out = real(self, images, *a, **k)
        calls["n"] += 1
        if calls["n"] in (2, 4, 5, 6):  # one bad step, then three in a row
            out["loss"] = out["loss"] * float("nan")
        return out

    tr.guidance.__class__.__call__ = flaky
    try:
        before = [p.detach().clone() for p in tr.renderer.parameters()]
        tr.train_step()
        rec = tr.train_step()
        assert rec["skipped"] and tr.skipped == 1
        tr.train_step()
        tr.train_step()
        tr.train_step()
        with pytest.raises(DreamlmcError) as e:
            tr.train_step()
        assert "non-finite" in str(e.value)
        assert all(torch.isfinite(p).all() for p in tr.renderer.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, tr.renderer.parameters()))
    finally:
        tr.guidance.__class__.__call__ = real


def test_render_views_writes_the_runs_renders_and_their_prompts_for_k_psi(finished_run, tmp_path, capsys):
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from tools.render_views import main as render_views

    out = tmp_path / "renders"
    assert render_views([str(finished_run), "--out", str(out), "--views", "3"]) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3 and all(Image.open(p).size == (16, 16) for p in pngs)  # the run's training size
    table = json.loads((out / "prompts.json").read_text())
    assert sorted(table) == [p.name for p in pngs]
    assert all(v.startswith("a red cube, ") and v.endswith(" view") for v in table.values())
    img = np.asarray(Image.open(pngs[0])).astype(float)
    assert img[0, 0].min() > 250 and img.min() < 200  # white background around a rendered object
    from dreamlmc.guidance.backends import load_backend
    from dreamlmc.guidance.corrective_train import folder_pool

    pool = folder_pool(load_backend("builtin"), out)
    assert pool["prompts"] == [table[p.name] for p in pngs] and pool["x"].shape == (3, 3, 32, 32)
    from tools.benchutil import run_cli

    assert run_cli(lambda: render_views([str(tmp_path), "--out", str(out)]), "render_views") == 2  # not a run
    assert not list(out.glob(f"{tmp_path.name}_*.png"))
    assert "not a run folder" in capsys.readouterr().err
    assert run_cli(lambda: render_views([str(finished_run), "--out", str(out), "--views", "0"]), "rv") == 2
    assert capsys.readouterr().err.strip() == "rv: --views must be >= 1, got 0"
    (out / "prompts.json").write_text("{not json")
    assert run_cli(lambda: render_views([str(finished_run), "--out", str(out)]), "rv") == 2
    assert "is not readable JSON" in capsys.readouterr().err
    assert (out / "prompts.json").read_text() == "{not json"  # left as it was
