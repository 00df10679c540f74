"""Every backend satisfies one interface; the diffusers ones load tiny models saved locally (no network)."""
import pytest
import torch

from dreamlmc.errors import DreamlmcError
from dreamlmc.guidance.backends import load_backend
from dreamlmc.guidance.sds import GuidanceConfig, ScoreDistillation
from tiny_models import make_tiny_if, make_tiny_sd


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return make_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="module")
def tiny_if(tmp_path_factory):
    return make_tiny_if(tmp_path_factory.mktemp("if") / "tiny-if")


@pytest.fixture(params=["builtin", "sd", "if"])
def backend(request, tiny_sd, tiny_if):
    model = {"builtin": "builtin", "sd": str(tiny_sd), "if": str(tiny_if)}[request.param]
    return load_backend(model)


def test_backend_interface(backend):
    C, h, w = backend.latent_shape
    img = torch.rand(2, 3, 24, 24, requires_grad=True)
    x = backend.encode_images(img)
    assert x.shape == (2, C, h, w)
    x.sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0  # differentiable w.r.t. the images
    prompts = ["a red cube", "a blue sphere"]
    cond, uncond = backend.encode_prompts(prompts), backend.encode_prompts(["", ""])
    assert cond.shape[0] == 2 and not torch.equal(cond[0], cond[1])
    assert torch.equal(backend.encode_prompts(prompts), cond)  # cached
    e_c, e_u = backend.predict_noise(torch.randn(2, C, h, w), torch.tensor([10, 900]), cond, uncond)
    assert e_c.shape == (2, C, h, w) and e_u.shape == (2, C, h, w) and torch.isfinite(e_c).all()
    assert backend.alphas_cumprod.shape == (1000,) and backend.decode(x.detach()).shape[1] == 3


def test_guidance_runs_on_each_backend(backend):
    g = ScoreDistillation(GuidanceConfig(kind="lmc-sds", corrective="identity", guidance_scale=7.5), backend)
    img = torch.rand(2, 3, 16, 16, requires_grad=True)
    out = g(img, ["a red cube, front view", "a red cube, side view"])
    out["loss"].backward()
    assert torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0


def test_refinement_runs_on_each_backend(backend):
    """The refinement stage's loss (TrainConfig.refine) in each prior's own space, pixels or latents."""
    g = ScoreDistillation(GuidanceConfig(corrective="identity"), backend)
    img = torch.rand(2, 3, 16, 16, requires_grad=True)
    out = g.refine(img, ["a red cube, front view", "a red cube, side view"], (0.2, 0.5), 3.0, 2)
    out["loss"].backward()
    assert torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0 and 0.2 <= float(out["t"]) <= 0.5


def test_kinds_are_detected(tiny_sd, tiny_if):
    assert type(load_backend(str(tiny_sd))).__name__ == "StableDiffusionBackend"
    assert type(load_backend(str(tiny_if))).__name__ == "DeepFloydIFBackend"


@pytest.mark.parametrize("model,needle", [("/nonexistent/folder", "no such folder"),
                                          ("not-a-hub-id", "no such folder"),
                                          ("someorg/some-model-that-is-not-here", "hub")])
def test_missing_models_are_one_line_errors(model, needle, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DreamlmcError) as e:
        load_backend(model)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_folder_without_model_index(tmp_path):
    with pytest.raises(DreamlmcError) as e:
        load_backend(str(tmp_path))
    assert "model_index.json" in str(e.value)


def test_builtin_prior_samples_are_finite_and_reproducible():
    from dreamlmc.guidance.backends.builtin import BuiltinBackend
    from dreamlmc.shapes.prior import sample

    be = BuiltinBackend()
    R = be.image_resolution
    a = sample(be.net, ["a red cube", "a blue torus"], 3.0, 4, generator=torch.Generator().manual_seed(0))
    b = sample(be.net, ["a red cube", "a blue torus"], 3.0, 4, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 3, R, R) and torch.isfinite(a).all() and torch.equal(a, b)
    assert be.prior_card["kind"] == "dreamlmc-builtin-prior"
    # the card lists the vocabulary the prior was trained on: the world's words
    from dreamlmc.shapes.world import COLOURS, SHAPES

    from dreamlmc.shapes.prior import TOKENS

    vocabulary = be.prior_card["vocabulary"]  # a prior from before the last view words: a prefix of today's
    assert vocabulary == list(TOKENS)[:len(vocabulary)] and set(COLOURS) | set(SHAPES) <= set(vocabulary)
    # a different seed gives different samples (the generator is really used)
    c = sample(be.net, ["a red cube", "a blue torus"], 3.0, 4, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(a, c)


def test_builtin_prior_rejects_unknown_words():
    from dreamlmc.guidance.backends.builtin import BuiltinBackend

    with pytest.raises(DreamlmcError) as e:
        BuiltinBackend().encode_prompts(["a red dragon"])
    assert "dragon" in str(e.value) and "--model" in str(e.value)


def test_builtin_prior_splits_a_prompt_into_its_colour_for_composable_guidance():
    from dreamlmc.guidance.backends.builtin import BuiltinBackend

    be = BuiltinBackend()
    assert be.partial_prompts(["a white cube, front view", "an orange pyramid", "a cone, side view"]) == [
        "a white, front view", "an orange", ""]  # no colour: the unconditional prompt (plain guidance)
    be.encode_prompts(be.partial_prompts(["a white cube, front view"]))  # and the prior takes them


def test_builtin_prior_refuses_a_view_word_its_weights_never_saw():
    from dreamlmc.guidance.backends.builtin import BuiltinBackend

    be = BuiltinBackend()
    if "three-quarter" in be.prior_card["vocabulary"]:
        pytest.skip("the shipped prior knows the 45° view words")
    be.encode_prompts(["a red cube, side view"])  # its own words pass
    with pytest.raises(DreamlmcError) as e:
        be.encode_prompts(["a red cube, three-quarter view"])
    assert "three-quarter" in str(e.value) and "--fine-views" in str(e.value)


def test_builtin_prior_checks_words_against_its_card_by_name_not_by_position():
    from dreamlmc.guidance.backends.builtin import BuiltinBackend

    be = BuiltinBackend()
    be.prior_card = dict(be.prior_card, vocabulary=[w for w in be.prior_card["vocabulary"] if w != "black"])
    be.encode_prompts(["a red cube, overhead view"])  # a word after the missing one still passes
    with pytest.raises(DreamlmcError) as e:
        be.encode_prompts(["a black sphere"])
    assert "'black'" in str(e.value) and "--fine-views" not in str(e.value)


def test_overhead_views_need_a_prior_whose_data_reach_them():
    from types import SimpleNamespace

    from dreamlmc.cameras import CameraConfig, view_words
    from dreamlmc.guidance.backends.builtin import BuiltinBackend
    from dreamlmc.trainer import _check_overhead_views

    assert BuiltinBackend().data_elevation_range() == (-10.0, 45.0)  # the shipped card has no data section

    def backend(rng):
        return SimpleNamespace(data_elevation_range=lambda: rng)

    high = CameraConfig(elevation_range=(0.0, 30.0), overhead_prob=0.2)
    with pytest.raises(DreamlmcError, match="stop at 45°"):
        _check_overhead_views(view_words(high), backend((-10.0, 45.0)))
    with pytest.raises(DreamlmcError, match="'overhead'"):
        _check_overhead_views(view_words(CameraConfig(elevation_range=(0.0, 70.0))), backend((-10.0, 45.0)))
    _check_overhead_views(view_words(high), backend((-10.0, 85.0)))  # trained on views from above (row 96)
    _check_overhead_views(view_words(high), backend(None))  # real priors: unknown, allowed
    level = CameraConfig(elevation_range=(0.0, 60.0))  # no view above 60°
    _check_overhead_views(view_words(level), backend((-10.0, 45.0)))


def test_pickle_only_weights_are_refused_with_a_conversion_hint(tmp_path):
    from diffusers import UNet2DConditionModel

    from tiny_models import make_tiny_sd

    folder = make_tiny_sd(tmp_path / "sd")
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    for f in (folder / "unet").glob("*.safetensors"):
        f.unlink()
    unet.save_pretrained(folder / "unet", safe_serialization=False)  # diffusion_pytorch_model.bin
    assert list((folder / "unet").glob("*.bin"))
    with pytest.raises(DreamlmcError, match=r"only pickle weights .*safetensors only.*safe_serialization=True"):
        load_backend(str(folder))


@pytest.mark.parametrize("split", ["guidance.partial_scale=3", "guidance.shape_boost=0.5"])
def test_composable_guidance_is_refused_at_start_on_a_real_prior(tiny_sd, tmp_path, split):
    from dreamlmc.trainer import Trainer, resolve_config

    cfg = resolve_config([], [f"model={tiny_sd}", "prompt=a red cube", split,
                              "guidance.corrective=identity"])
    with pytest.raises(DreamlmcError, match="built-in prior"):
        Trainer(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()
