"""dreamlmc batch: prompts files, run expansion, and real batches on a local Ray (tiny runs)."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dreamlmc import batch
from dreamlmc.cli import main
from dreamlmc.errors import DreamlmcError

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "quick.yaml")
TINY = ["steps=4", "checkpoint_every=2", "turntable_frames=2", "export.resolution=32"]
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[test]')")


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_text_prompts_skip_comments_and_blank_lines(tmp_path):
    p = _write(tmp_path, "p.txt", "# props\na red cube\n\n  a blue sphere  # the ball\n#a green cone\n")
    entries = batch.load_entries(p)
    assert [e.prompt for e in entries] == ["a red cube", "a blue sphere"]
    assert entries[1].where == "p.txt:4"


def test_yaml_entries_and_their_runs(tmp_path):
    p = _write(tmp_path, "p.yaml", """
- a red cube
- prompt: a blue sphere
  guidance: sds
  guidance_scale: 7.5
  seeds: [0, 1]
  overrides: {steps: 5}
- prompt: a red cube
  eps_seeds: 3
""")
    runs = batch.expand(batch.load_entries(p), variations=2)
    slugs = [r.slug for r in runs]
    assert slugs == ["a-red-cube_eps0", "a-red-cube_eps1", "a-blue-sphere_seed0_eps0", "a-blue-sphere_seed0_eps1",
                     "a-blue-sphere_seed1_eps0", "a-blue-sphere_seed1_eps1", "a-red-cube_eps3"]
    sphere = runs[2]
    assert sphere.argv[:6] == ["--prompt", "a blue sphere", "--guidance", "sds", "--guidance-scale", "7.5"]
    assert "--seed" in sphere.argv and sphere.argv[-1] == "steps=5" and sphere.eps_seed == 0


@pytest.mark.parametrize("text, message", [
    (None, "does not exist"),
    ("# nothing but a comment\n\n", "holds no prompts"),
    ("a red cube\na shiny teapot\n", "'shiny', 'teapot'"),
])
def test_bad_prompts_file_is_one_line_exit_2_before_any_work(tmp_path, capsys, text, message):
    p = tmp_path / "prompts.txt"
    if text is not None:
        p.write_text(text)
    out = tmp_path / "out"
    assert main(["batch", str(p), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()  # no work started


@pytest.mark.parametrize("text, message", [
    ("- prompt: a red cube\n  colour: red\n", "unknown key(s) colour"),
    ("- {seeds: [1]}\n", "mapping with a 'prompt' string"),
    ("- prompt: a red cube\n  seeds: []\n", "non-empty list"),
    ("prompt: [a red cube\n", "not valid YAML"),
])
def test_bad_yaml_entries(tmp_path, text, message):
    with pytest.raises(DreamlmcError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        batch.load_entries(_write(tmp_path, "p.yaml", text))


def _summary(out):
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_four_runs_two_workers_one_failing(tmp_path, capsys):
    p = _write(tmp_path, "p.yaml", """
- a red cube
- prompt: a blue sphere
  seed: 3
- prompt: a green cone
  overrides: ["renderer.num_samples=abc"]
- prompt: a yellow torus
  eps_seeds: [1]
""")
    out = tmp_path / "out"
    code = main(["batch", str(p), "--out", str(out), "--workers", "2", "--config", QUICK, "--quiet"] + TINY)
    assert code == 1  # one run failed
    err = capsys.readouterr().err
    assert "a-green-cone failed" in err and "renderer.num_samples" in err
    s = _summary(out)
    status = {r["slug"]: r["status"] for r in s["runs"]}
    assert status == {"a-red-cube": "ok", "a-blue-sphere": "ok", "a-green-cone": "failed",
                      "a-yellow-torus_eps1": "ok"}
    ok = [r for r in s["runs"] if r["status"] == "ok"]
    for r in ok:
        assert (Path(r["run_dir"]) / "DONE").exists() and Path(r["mesh"]).exists() and r["seconds"] > 0
        assert 0 < r["peak_rss_gib"] < 4
        assert 0 <= r["iou"] <= 1 and r["nearest"] in ("cube", "sphere", "cylinder", "cone", "torus", "pyramid")
    assert s["total"] == 4 and s["ok"] == 3 and s["failed"] == 1 and s["workers"] == 2
    csv = (out / "summary.csv").read_text().splitlines()
    assert csv[0].startswith("slug,prompt,seed,eps_seed,status") and len(csv) == 5
    from PIL import Image

    assert Image.open(out / "contact_sheet.png").size[0] > 128
    # the sphere's seed and the torus's eps seed reached their runs
    import yaml

    assert yaml.safe_load((out / "a-blue-sphere" / "config.yaml").read_text())["seed"] == 3
    g = yaml.safe_load((out / "a-yellow-torus_eps1" / "config.yaml").read_text())["guidance"]
    assert g["fixed_eps"] is True and g["eps_seed"] == 1


@pytest.mark.slow
def test_workers_caps_the_runs_in_flight_when_each_takes_one_core(tmp_path):
    """--workers 1 --cpus-per-run 1 on a machine of 2+ cores: one run at a time (Ray alone starts one task per free
    core; it ran two at once). Each run's start and finish are in the summary."""
    p = _write(tmp_path, "p.txt", "a red cube\na blue cube\n")
    out = tmp_path / "out"
    assert main(["batch", str(p), "--out", str(out), "--workers", "1", "--cpus-per-run", "1", "--config", QUICK,
                 "--quiet"] + TINY) == 0
    spans = sorted((r["started"], r["finished"]) for r in _summary(out)["runs"])
    assert len(spans) == 2 and all(a < b for a, b in spans)
    assert all(prev[1] <= nxt[0] for prev, nxt in zip(spans, spans[1:]))  # no two overlap


@pytest.mark.slow
def test_a_batch_run_is_bit_for_bit_dreamlmc_train(tmp_path):
    from safetensors.torch import load_file

    p = _write(tmp_path, "p.txt", "a red cube\n")
    out = tmp_path / "out"
    assert main(["batch", str(p), "--out", str(out), "--workers", "1", "--cpus-per-run", "1", "--config", QUICK,
                 "--quiet", "seed=5"] + TINY) == 0
    single = tmp_path / "single"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the batch ran its run with one thread: the same summation order
    try:
        assert main(["train", "--prompt", "a red cube", "--out", str(single), "--config", QUICK, "--quiet",
                     "seed=5"] + TINY) == 0
    finally:
        torch.set_num_threads(threads)
    a = load_file(str(out / "a-red-cube" / "checkpoints" / "last.safetensors"))
    b = load_file(str(single / "checkpoints" / "last.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_killed_batch_resumes_and_keeps_finished_runs(tmp_path):
    p = _write(tmp_path, "p.txt", "a red cube\na blue cube\na green cube\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "dreamlmc.cli", "batch", str(p), "--out", str(out), "--workers", "1", "--config",
           QUICK, "--quiet", "steps=40", "checkpoint_every=5", "turntable_frames=2", "export.resolution=32"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 900  # generous: on a loaded 2-core machine one 40-step run has taken over 300 s
    first_done = None
    while time.time() < deadline and proc.poll() is None:
        done = sorted(out.glob("*/DONE"))
        ckpts = [c for c in out.glob("*/checkpoints/last.safetensors") if not (c.parents[1] / "DONE").exists()]
        if done and ckpts:
            first_done = done[0].parent
            break
        time.sleep(0.2)
    if first_done is None:
        proc.kill()
        _, err = proc.communicate(timeout=60)
        pytest.fail(f"no run finished while another was under way (exit {proc.returncode}): {err[-2000:]}")
    glb = (first_done / "model.glb").read_bytes()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert (first_done / "DONE").exists() and (first_done / "model.glb").read_bytes() == glb
    assert main(cmd[3:]) == 0  # the same command again, in-process
    s = _summary(out)
    assert s["ok"] == 3
    again = {r["slug"]: r for r in s["runs"]}
    assert again[first_done.name]["skipped"] is True
    assert (first_done / "model.glb").read_bytes() == glb
    assert all((out / slug / "DONE").exists() for slug in again)
