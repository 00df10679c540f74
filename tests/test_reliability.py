"""Faults survived: one writer per run folder (two processes), failing writes (ENOSPC/EIO) during the checkpoint,
the GLB export and the preview, and a SIGKILL in the middle of a checkpoint write."""
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dreamlmc.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "quick.yaml")
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def _train_cmd(out, *extra):
    return [sys.executable, "-m", "dreamlmc.cli", "train", "--prompt", "a red cube", "--out", str(out), "--config",
            QUICK, "--quiet"] + list(extra)


def _wait_for(cond, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_one_writer_per_run_folder_and_stale_locks_are_recovered(tmp_path, capsys):
    out = tmp_path / "run"
    first = subprocess.Popen(_train_cmd(out, "steps=100000", "checkpoint_every=5"), env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: (out / "checkpoints" / "last.safetensors").exists())
        for argv in (["train", "--resume", str(out), "--quiet"], ["export", str(out)],
                     ["train", "--prompt", "a red cube", "--out", str(out), "--force", "--quiet"]):
            assert main(argv) == 2
            err = capsys.readouterr().err.strip()
            assert "another dreamlmc process" in err and len(err.splitlines()) == 1, err
        assert (out / "config.yaml").exists() and not (out / "DONE").exists()  # untouched
    finally:
        first.send_signal(signal.SIGKILL)  # dies holding the lock
        first.wait(timeout=30)
    assert (out / ".lock").exists()  # the stale lock file of a dead process ...
    assert main(["train", "--resume", str(out), "--quiet", "--steps", "12"]) == 0  # ... does not block
    assert (out / "DONE").exists()


def _fail_nth_write(monkeypatch, target: str, n: int, code=errno.ENOSPC):
    """Make the n-th atomic write whose path name contains `target` raise OSError(code)."""
    import dreamlmc.io as io

    real = io.atomic_write
    count = {"n": 0}

    def flaky(path, write, what=""):
        if target in Path(path).name:
            count["n"] += 1
            if count["n"] == n:
                def broken(p):
                    write(p)
                    raise OSError(code, os.strerror(code))
                return real(path, broken, what)
        return real(path, write, what)

    for mod in ("dreamlmc.io", "dreamlmc.checkpoint", "dreamlmc.media", "dreamlmc.export"):
        monkeypatch.setattr(f"{mod}.atomic_write", flaky, raising=False)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_failing_checkpoint_write_stops_cleanly_and_keeps_the_previous_one(tmp_path, monkeypatch, capsys, code):
    from dreamlmc.checkpoint import checkpoint_state

    out = tmp_path / "run"
    # checkpoints at step 0 (somewhere to go back to should the object vanish), 4, 8, then 12 fails
    _fail_nth_write(monkeypatch, "last.safetensors", 4, code)
    assert main(["train", "--prompt", "a red cube", "--out", str(out), "--config", QUICK, "--quiet", "steps=20",
                 "checkpoint_every=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and os.strerror(code) in err and "--resume" in err
    ckpt = out / "checkpoints" / "last.safetensors"
    assert checkpoint_state(ckpt)["step"] == 8
    assert not list((out / "checkpoints").glob(".*tmp*"))  # no temporary file left behind
    monkeypatch.undo()
    assert main(["train", "--resume", str(out), "--quiet"]) == 0 and (out / "DONE").exists()


@pytest.mark.parametrize("target", ["model.glb", "preview.png"])
def test_a_failing_output_write_is_one_line_and_the_run_resumes(tmp_path, monkeypatch, capsys, target):
    out = tmp_path / "run"
    _fail_nth_write(monkeypatch, target, 1)
    assert main(["train", "--prompt", "a red cube", "--out", str(out), "--config", QUICK, "--quiet",
                 "steps=6"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and target in err
    assert not (out / "DONE").exists() and (out / "checkpoints" / "last.safetensors").exists()
    monkeypatch.undo()
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert (out / "DONE").exists() and (out / target).exists()


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_leaves_a_loadable_checkpoint(tmp_path):
    """The child writes its checkpoints slowly (a sleep inside the write, after the tensors are on disk in the
    temporary file); it is SIGKILLed there. The checkpoint left is whole: the previous one."""
    from dreamlmc.checkpoint import checkpoint_state

    out = tmp_path / "run"
    code = f"""
import time, sys
import safetensors.torch as st
real = st.save_file
def slow(tensors, path, metadata=None):
    real(tensors, path, metadata=metadata)
    open({str(tmp_path / 'writing')!r}, 'w').write(path)
    time.sleep(30)
st.save_file = slow
from dreamlmc.cli import main
sys.exit(main({_train_cmd(out, 'steps=100', 'checkpoint_every=3')[3:]!r}))
"""
    # first a normal run for 3 steps (a complete checkpoint exists), then the slow writer resumes it
    assert main(["train", "--prompt", "a red cube", "--out", str(out), "--config", QUICK, "--quiet", "steps=3",
                 "checkpoint_every=3"]) == 0
    before = checkpoint_state(out / "checkpoints" / "last.safetensors")["step"]
    code = code.replace(repr(_train_cmd(out, 'steps=100', 'checkpoint_every=3')[3:]),
                        repr(["train", "--resume", str(out), "--steps", "100", "--quiet"]))
    proc = subprocess.Popen([sys.executable, "-c", code], env=ENV, stderr=subprocess.PIPE, text=True)
    # the marker holds the temporary file's path once written (it exists, empty, a moment before: a CI run read '')
    if not _wait_for(lambda: (tmp_path / "writing").exists() and (tmp_path / "writing").read_text()):
        proc.kill()
        pytest.fail(f"the resumed run never wrote a checkpoint; its stderr: {proc.communicate(timeout=30)[1][-2000:]}")
    tmp_file = Path((tmp_path / "writing").read_text())
    assert tmp_file.exists() and tmp_file.name.startswith(".last.safetensors.")  # killed mid-write
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    state = checkpoint_state(out / "checkpoints" / "last.safetensors")
    assert state["step"] == before
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(str(out / "checkpoints" / "last.safetensors")).values()
               if t.is_floating_point())
    assert main(["train", "--resume", str(out), "--quiet", "--steps", "6"]) == 0
