"""Run reports: report.html's contents, index.html, `dreamlmc report` / `view`, the exported GLBs under the Khronos
glTF Validator, and the report in a real (headless) Chromium."""
import base64
import json
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from dreamlmc.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "quick.yaml")
TINY = ["steps=40", "turntable_frames=4", "export.resolution=48"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "red-cube"
    assert main(["train", "--prompt", "a red cube", "--out", str(out), "--config", QUICK, "--quiet"] + TINY) == 0
    return out


def test_train_writes_a_self_contained_report(run):
    page = (run / "report.html").read_text()
    info = json.loads((run / "run.json").read_text())
    assert info["wall_s"] > 0 and 0 < info["peak_rss_gib"] < 8 and info["steps"] == 40
    for text in ("a red cube", "lmc-sds, scale s = 20.0", "fresh ε every step", "wall time", "peak RSS",
                 "<details>", "download model.glb", 'src="preview.png"', "turntable",
                 "from 70% of training: SDEdit targets at t 0.05-0.2, 2 DDIM steps"):
        assert text in page, text
    # four plots, each with axis labels
    assert page.count('class="plot"') == 4 and page.count("training step") == 4
    # the viewer is inlined (no CDN, no server) and the GLB inside it is model.glb itself
    assert "customElements" in page and "http://" not in page.split("<body>")[0].split("<script>")[0]
    glb = re.search(r'src="data:model/gltf-binary;base64,([A-Za-z0-9+/=]+)"', page).group(1)
    assert base64.b64decode(glb) == (run / "model.glb").read_bytes()


@pytest.mark.parametrize("case", ["missing", "unfinished", "foreign", "empty folder"])
def test_report_and_view_refuse_what_is_not_a_finished_run(tmp_path, capsys, run, case):
    target = tmp_path / "x"
    if case == "unfinished":
        shutil.copytree(run, target)
        (target / "DONE").unlink()
    elif case == "foreign":
        target.mkdir()
        (target / "notes.txt").write_text("hello")
        (target / "config.yaml").write_text("a: 1\n")
    elif case == "empty folder":
        target.mkdir()
    for cmd in ("report", "view"):
        assert main([cmd, str(target)] + (["--no-browser"] if cmd == "view" else [])) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("dreamlmc: error:") and len(err.splitlines()) == 1


def test_report_of_a_folder_of_runs_writes_an_index(tmp_path, run):
    folder = tmp_path / "many"
    folder.mkdir()
    for name in ("eps0", "eps1"):
        shutil.copytree(run, folder / name)
        (folder / name / "report.html").unlink()
    assert main(["report", str(folder)]) == 0
    index = (folder / "index.html").read_text()
    assert 'href="eps0/report.html"' in index and 'href="eps1/report.html"' in index
    assert "eps0/preview.png" in index
    assert (folder / "eps1" / "report.html").exists()


def test_view_serves_the_report_on_localhost_and_stops_on_ctrl_c(run):
    proc = subprocess.Popen([sys.executable, "-m", "dreamlmc.cli", "view", str(run), "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"(http://127\.0\.0\.1:\d+/report\.html)", line).group(1)
        body = urllib.request.urlopen(url, timeout=10).read()
        assert body == (run / "report.html").read_bytes()
        assert urllib.request.urlopen(url.replace("report.html", "model.glb"), timeout=10).read() == \
            (run / "model.glb").read_bytes()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "stopped" in out and "Traceback" not in err


def _validator():
    node = shutil.which("node")
    script = ROOT / "tools" / "web" / "validate_gltf.js"
    if node is None:
        pytest.skip("node is not installed (tools/install_test_tools.sh)")
    if not (ROOT / "tools" / "web" / "node_modules" / "gltf-validator").exists():
        pytest.skip("gltf-validator is not installed (run tools/install_test_tools.sh)")
    return node, script


@pytest.mark.parametrize("texture", [False, True])
def test_exported_glbs_pass_the_khronos_gltf_validator(tmp_path, run, texture):
    node, script = _validator()
    glb = tmp_path / "model.glb"
    assert main(["export", str(run), "--out", str(glb)] + (["--texture"] if texture else [])) == 0
    r = subprocess.run([node, str(script), str(glb)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"]
    attributes = report["info"]["resources"] if "resources" in report["info"] else []
    assert report["info"]["drawCallCount"] >= 1 and isinstance(attributes, list)


def test_report_opens_in_a_real_browser(tmp_path, run):
    pytest.importorskip("playwright", reason="playwright is not installed (pip install -e '.[test]')")
    from tools.browser_check import check_report, find_chromium

    if find_chromium() is None:
        pytest.skip("no Chromium here (tools/install_test_tools.sh installs Debian's chromium)")
    shot = tmp_path / "viewer.png"
    r = check_report(run / "report.html", shot)
    assert r["loaded"] == "1", r
    assert r["errors"] == []
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    red = (img[..., 0] > 120) & (img[..., 1] < 90) & (img[..., 2] < 90)  # the red cube's pixels
    assert red.mean() > 0.02, red.mean()
