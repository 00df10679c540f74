"""The image-to-image translation network: identity at init, training moves it, saved/applied, bad inputs."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from dreamlmc.cli import main
from dreamlmc.shapes.data import ground_truth_renders as world_sources
from dreamlmc.translate import TranslationNet, load_translation


def test_network_starts_as_identity_and_keeps_range():
    x = torch.rand(2, 3, 32, 32) * 0.9 + 0.05
    net = TranslationNet()
    assert torch.allclose(net(x), x, atol=1e-5)
    torch.nn.init.normal_(net.out.weight, std=1.0)
    y = net(x)
    assert not torch.allclose(y, x, atol=1e-3) and y.min() >= 0 and y.max() <= 1


def test_world_sources_render_the_named_colour():
    imgs = world_sources(["a blue cube"], 2, 32, seed=0)
    assert imgs.shape == (2, 3, 32, 32)
    fg = (imgs < 0.9).any(1)  # object pixels (the background is white)
    assert fg.float().mean() > 0.05
    rgb = imgs.permute(0, 2, 3, 1)[fg]
    assert (rgb[:, 2] > rgb[:, 0]).float().mean() > 0.9  # blue dominates red on the object


def test_dds_trains_with_each_source_images_own_prompt(tmp_path, monkeypatch):
    """With --source renders and no --source-prompt, every image is paired with the prompt it was rendered from."""
    from dreamlmc.guidance.sds import ScoreDistillation

    seen = []
    real = ScoreDistillation.__call__

    def spy(self, images, *a, source_cond=None, source_images=None, **kw):
        seen.append((source_cond.clone(), source_images.clone(), self.embed(["a blue cube", "a green sphere"])[0]))
        return real(self, images, *a, source_cond=source_cond, source_images=source_images, **kw)

    monkeypatch.setattr(ScoreDistillation, "__call__", spy)
    out = tmp_path / "dds.safetensors"
    assert main(["translate", "train", "--prompt", "a red cube", "--source", "a blue cube", "a green sphere",
                 "--per-source", "2", "--steps", "2", "--batch-size", "4", "--guidance", "dds", "--out", str(out),
                 "--quiet"]) == 0
    from dreamlmc.shapes.data import ground_truth_renders

    data = ground_truth_renders(["a blue cube", "a green sphere"], 2, seen[0][1].shape[-1], 0)
    for cond, x, (blue, green) in seen:
        for c, img in zip(cond, x):
            i = int(((data - img) ** 2).flatten(1).sum(1).argmin())  # which source image this is
            torch.testing.assert_close(c, blue if i < 2 else green)


def test_train_then_apply(tmp_path):
    out = tmp_path / "net.safetensors"
    args = ["translate", "train", "--prompt", "a red cube", "--source", "a blue cube", "--per-source", "2",
            "--steps", "3", "--batch-size", "2", "--lr", "0.05", "--out", str(out), "--quiet",
            "--figure", str(tmp_path / "fig.png")]
    assert main(args) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["prompt"] == "a red cube" and card["steps"] == 3 and card["sources"] == 2
    net, card2 = load_translation(str(out))
    assert card2["resolution"] == card["resolution"]
    assert net.out.weight.abs().sum() > 0  # trained away from the zero-initialised identity
    assert (tmp_path / "fig.png").exists()
    # a finished network is not overwritten without --force
    assert main(args) == 2
    assert main(args + ["--force"]) == 0

    src = tmp_path / "in.png"
    Image.fromarray((np.full((40, 40, 3), 0.5) * 255).astype(np.uint8)).save(src)
    res = tmp_path / "out.png"
    assert main(["translate", "apply", "--net", str(out), "--input", str(src), "--out", str(res)]) == 0
    R = card["resolution"]
    assert Image.open(res).size == (R, 2 * R)


@pytest.mark.parametrize("extra, message", [
    (["--source", "a blue cube", "--images", "somewhere"], "either --images"),
    ([], "either --images"),
    (["--source", "a blue"], "must name a colour and a shape"),
    (["--images", "/no/such/folder"], "is not a folder"),
    (["--source", "a blue cube", "--steps", "0"], "must be >= 1"),
    (["--images", "{tmp}", "--guidance", "dds"], "needs --source-prompt"),
    (["--source", "a blue cube", "--source-prompt", "a blue cube"], "dds only"),
])
def test_bad_training_inputs_are_one_line_errors(tmp_path, capsys, extra, message):
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    code = main(["translate", "train", "--prompt", "a red cube", "--out", str(tmp_path / "n.safetensors"),
                 "--quiet"] + extra)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "n.safetensors").exists()


def test_apply_refuses_files_that_are_not_translation_networks(tmp_path, capsys):
    assert main(["translate", "apply", "--net", str(tmp_path / "none.safetensors"), "--input", "x.png",
                 "--out", str(tmp_path / "o.png")]) == 2
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not safetensors")
    assert main(["translate", "apply", "--net", str(bogus), "--input", "x.png", "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert "translation network not found" in err and "not a safetensors file" in err
