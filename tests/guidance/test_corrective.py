import numpy as np
import pytest
import torch

from dreamlmc.errors import DreamlmcError
from dreamlmc.guidance.backends import load_backend
from dreamlmc.guidance.corrective import Corrective, load_corrective, save_corrective
from dreamlmc.guidance.corrective_train import radial_power_spectrum, train_corrective
from tiny_models import make_tiny_if


@pytest.fixture(scope="module")
def tiny_if(tmp_path_factory):
    return load_backend(str(make_tiny_if(tmp_path_factory.mktemp("if") / "tiny-if")))


def test_training_reduces_the_regression_loss_and_resumes(tiny_if, tmp_path):
    out = tmp_path / "k.safetensors"
    card = train_corrective(tiny_if, out, prompts=["a red cube", "a blue sphere"], steps=150, batch_size=16,
                            per_prompt=4, sample_steps=4, lr=3e-3, t_range=(0.02, 0.5), progress=False)
    assert card["final_loss"] < card["initial_loss"]
    assert card["model_id"] == tiny_if.model_id and card["steps"] == 150
    net, loaded = load_corrective(out, expect_model_id=tiny_if.model_id)
    assert loaded["latent_shape"] == list(tiny_if.latent_shape)
    card2 = train_corrective(tiny_if, out, prompts=["a red cube"], steps=160, batch_size=8, progress=False)
    assert card2["steps"] == 160  # continued from the checkpoint beside the output


def test_a_corrective_for_another_prior_is_refused(tmp_path):
    path = tmp_path / "k.safetensors"
    save_corrective(Corrective(channels=3), path, {"model_id": "some-other-prior"})
    with pytest.raises(DreamlmcError) as e:
        load_corrective(path, expect_model_id="builtin")
    assert "some-other-prior" in str(e.value)


def test_radial_spectrum_sees_blur():
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
    s, sb = radial_power_spectrum(x), radial_power_spectrum(blurred)
    assert sb[12:].sum() < 0.2 * s[12:].sum()  # high frequencies lost


def test_diagnostic_figure(tiny_if, tmp_path):
    from PIL import Image

    from dreamlmc.guidance.corrective_train import diagnostic_figure

    x = torch.rand(4, *tiny_if.latent_shape) * 2 - 1
    spectra = diagnostic_figure(tiny_if, Corrective(channels=3), x, ["a red cube"] * 4, tmp_path / "f.png",
                                ts=(0.2, 0.8))
    assert set(spectra) == {"0.2", "0.8"} and set(spectra["0.2"]) == {"x", "x_hat", "k_psi"}
    # an untrained corrective is the identity (zero-initialised residual): its spectrum is x's
    for t in spectra:
        assert np.allclose(spectra[t]["k_psi"], spectra[t]["x"], rtol=1e-4)
    img = np.asarray(Image.open(tmp_path / "f.png").convert("RGB"))
    R, n = tiny_if.image_resolution, 4
    assert img.shape[1] >= 2 * 3 * n * R and img.shape[0] >= 2 * 2 * R  # 2 rows (t) of x | x_hat | k_psi, 2x
    # the first tile of the first row is x itself, upscaled 2x (nearest)
    first = (tiny_if.decode(x[:1])[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert np.abs(img[: 2 * R: 2, : 2 * R: 2].astype(int) - first.astype(int)).max() <= 1


def test_training_from_a_folder_of_images(tiny_if, tmp_path):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    card = train_corrective(tiny_if, tmp_path / "k.safetensors", images=folder, steps=2, batch_size=2,
                            progress=False)
    assert card["source"] == str(folder) and card["steps"] == 2
    (folder / "bad.png").write_bytes(b"no png")
    with pytest.raises(DreamlmcError, match="bad.png: not a readable image"):
        train_corrective(tiny_if, tmp_path / "k2.safetensors", images=folder, steps=2, progress=False)


def test_an_image_folders_prompts_json_gives_each_image_its_prompt(tmp_path):
    from PIL import Image

    from dreamlmc.guidance.corrective_train import folder_prompts

    for name in ("b.png", "a.png"):
        Image.new("RGB", (8, 8), "white").save(tmp_path / name)
    assert folder_prompts(tmp_path) == ["", ""]  # no prompts.json: unconditional
    (tmp_path / "prompts.json").write_text('{"b.png": "a red cube, front view"}')
    assert folder_prompts(tmp_path) == ["", "a red cube, front view"]  # in the folder's (sorted) order
    (tmp_path / "prompts.json").write_text('["not", "a", "map"]')
    with pytest.raises(DreamlmcError, match="must map image file names"):
        folder_prompts(tmp_path)
    (tmp_path / "prompts.json").write_text('{broken')
    with pytest.raises(DreamlmcError, match="not readable JSON"):
        folder_prompts(tmp_path)


def test_bench_corrective_scores_the_shipped_k_psi_below_the_identity(tmp_path, capsys):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tools.bench_corrective import main as bench

    out = tmp_path / "c.json"
    assert bench(["--corrective", "shipped=builtin", "--prompts", "a red cube", "a purple torus", "--per-prompt", "2",
                  "--draws", "2", "--out", str(out)]) == 0
    losses = json.loads(out.read_text())["losses"]["prior samples"]
    assert losses["shipped"] < 0.8 * losses["identity"]  # k_psi reproduces the denoiser's blur better than x itself
    assert bench(["--corrective", "shipped"]) == 2 and "NAME=PATH" in capsys.readouterr().err


def test_a_checkpoint_keeps_its_nets_shape_for_resume_and_for_bench_corrective(tiny_if, tmp_path):
    import sys
    from pathlib import Path

    from dreamlmc.guidance.corrective_train import resume_path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tools.bench_corrective import load_any

    out = tmp_path / "k.safetensors"
    kw = dict(prompts=["a red cube"], per_prompt=2, sample_steps=2, batch_size=4, progress=False)
    train_corrective(tiny_if, out, steps=3, hidden=16, layers=3, **kw)
    _, net, note = load_any(f"small={resume_path(out)}", tiny_if)  # a training checkpoint, not the final file
    assert net.config["hidden"] == 16 and net.config["layers"] == 3 and "3 layers" in note
    with pytest.raises(DreamlmcError, match="hidden=16 layers=3"):
        train_corrective(tiny_if, out, steps=6, hidden=48, layers=4, **kw)  # another shape: one clear error
    assert train_corrective(tiny_if, out, steps=6, hidden=16, layers=3, **kw)["steps"] == 6
