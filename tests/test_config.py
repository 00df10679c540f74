from pathlib import Path

import pytest

from dreamlmc.config import build, load_yaml
from dreamlmc.errors import DreamlmcError
from dreamlmc.trainer import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_dotted_overrides_and_types():
    cfg = build(TrainConfig, [], ["renderer.num_samples=32", "guidance.guidance_scale=7.5",
                                  "camera.fovy_range=[40, 50]", "prompt=a red cube", "guidance.kind=sds"])
    assert cfg.renderer.num_samples == 32 and cfg.guidance.guidance_scale == 7.5
    assert cfg.camera.fovy_range == (40.0, 50.0) and cfg.prompt == "a red cube" and cfg.guidance.kind == "sds"


@pytest.mark.parametrize("override,needle", [
    ("renderer.num_sample=32", "renderer.num_sample"),
    ("renderer.num_samples=lots", "renderer.num_samples"),
    ("guidance.kind=vsd", "guidance.kind"),
    ("camera.fovy_range=[1, 2, 3]", "camera.fovy_range"),
    ("steps=-5", "steps"),
    ("nonsense", "key=value"),
])
def test_bad_keys_and_types_name_the_key(override, needle):
    with pytest.raises(DreamlmcError) as e:
        build(TrainConfig, [], [override])
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_presets_merge_in_order_and_all_shipped_presets_load():
    a = {"steps": 10, "renderer": {"num_samples": 20}}
    b = {"renderer": {"orientation_weight": 0.5}}
    cfg = build(TrainConfig, [a, b], ["steps=11"])
    assert (cfg.steps, cfg.renderer.num_samples, cfg.renderer.orientation_weight) == (11, 20, 0.5)
    presets = sorted(CONFIGS.glob("*.yaml"))
    assert presets, "configs/ should ship presets"
    for p in presets:
        build(TrainConfig, [load_yaml(p)])


def test_missing_or_broken_yaml(tmp_path):
    with pytest.raises(DreamlmcError):
        load_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(DreamlmcError):
        load_yaml(bad)


def test_build_does_not_write_overrides_into_the_presets():
    from dreamlmc.config import build
    from dreamlmc.trainer import TrainConfig

    preset = {"renderer": {"num_samples": 32}}
    a = build(TrainConfig, [preset], ["renderer.num_samples=16", "renderer.occupancy.resolution=8"])
    b = build(TrainConfig, [preset], [])
    assert a.renderer.num_samples == 16 and b.renderer.num_samples == 32
    assert b.renderer.occupancy.resolution == TrainConfig().renderer.occupancy.resolution
    assert preset == {"renderer": {"num_samples": 32}}


def test_default_yaml_documents_the_defaults_and_real_backends_keep_a_constant_scale():
    # configs/default.yaml says it only documents TrainConfig's defaults: it must change nothing
    assert build(TrainConfig, [load_yaml(CONFIGS / "default.yaml")]) == TrainConfig()
    # the built-in recipe's scale schedule (20 -> 12) and orientation 0.1 are measured on the built-in prior only
    for name in ("stable_diffusion.yaml", "deepfloyd_if.yaml"):
        cfg = build(TrainConfig, [load_yaml(CONFIGS / name)])
        assert cfg.guidance.end_scale() is None and cfg.renderer.orientation_weight == 0.01, name


def test_guidance_scale_flag_moves_the_whole_schedule():
    from dreamlmc.cli import _train_overrides, build_parser
    from dreamlmc.trainer import resolve_config

    def resolved(*argv):
        args = build_parser().parse_args(["train", "--out", "x", "--prompt", "a red cube", *argv])
        return resolve_config([], _train_overrides(args) + list(args.overrides)).guidance

    assert (resolved().guidance_scale, resolved().end_scale()) == (20.0, 12.0)  # the default: 20 -> 0.6 x 20
    g = resolved("--guidance-scale", "100")
    assert (g.guidance_scale, g.end_scale()) == (100.0, 60.0)
    assert resolved("guidance.guidance_scale_end=7.5").end_scale() == 7.5  # an absolute end wins over the factor
    assert resolved("guidance.guidance_scale_end_factor=null").end_scale() is None  # constant
    with pytest.raises(DreamlmcError, match="guidance_scale_end_factor"):
        resolved("--guidance-scale", "5000", "guidance.guidance_scale_end_factor=3")


def test_white_prompts_on_the_builtin_prior_train_on_dark_grounds_and_nothing_else_changes():
    """TrainConfig.white_on_dark (opt-in): a white prompt on model=builtin trains on the dark-ground prior with half of its
    views on a 0.2-0.3 grey; every other prompt, model or user-chosen background resolves exactly as without it."""
    import dataclasses

    from dreamlmc.config import to_dict
    from dreamlmc.trainer import resolve_config

    # opt-in: the dark-ground prior fails the prior gate (README row 106), so by default a white prompt is a prompt
    assert resolve_config([], ["prompt=a white cube"]).model == "builtin"
    white = resolve_config([], ["prompt=a white cube, front view", "white_on_dark=true"])
    f = white.renderer.field
    assert white.model == "builtin-dark" and f.background == "grey" and tuple(f.background_grey_range) == (0.2, 0.3)
    assert f.background_white_prob == 0.5
    # idempotent: a run's saved config (what --resume reads) resolves to itself
    assert resolve_config([to_dict(white)], []) == white

    def without_rule(cfg):
        return dataclasses.replace(cfg, white_on_dark=False)

    for over in (["prompt=a red cube"], ["prompt=a black sphere"], ["prompt=a white cube", "white_on_dark=false"],
                 ["prompt=a white cube", "model=/tmp/prior.safetensors"],
                 ["prompt=a white cube", "renderer.field.background=random"]):
        on, off = resolve_config([], ["white_on_dark=true"] + over), resolve_config([], over + ["white_on_dark=false"])
        assert on == dataclasses.replace(off, white_on_dark=on.white_on_dark), over


def test_the_dark_ground_prior_ships_and_shares_the_shipped_k_psi_without_a_warning():
    import warnings

    from dreamlmc.guidance.backends import is_builtin, load_backend
    from dreamlmc.guidance.sds import GuidanceConfig, ScoreDistillation

    assert is_builtin("builtin-dark")
    dark, shipped = load_backend("builtin-dark"), load_backend("builtin")
    assert dark.fingerprint != shipped.fingerprint and shipped.fingerprint in dark.corrective_fingerprints
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "k_psi ... was trained for other weights" would fail here
        ScoreDistillation(GuidanceConfig(kind="lmc-sds"), dark)


def test_the_white_rules_grounds_are_the_dark_ground_priors_own():
    """white_on_dark trains a white prompt on the grounds the shipped dark-ground prior's data had for white objects
    (its card): the same greys, and all of its views on them for a colour-keyed prior (white objects always on grey),
    half of them for a mixed one (README rows 105, 137)."""
    from dreamlmc.guidance.backends.builtin import dark_ground_views, dark_weights
    from dreamlmc.netio import read_card
    from dreamlmc.trainer import resolve_config

    data = read_card(dark_weights())["data"]
    f = resolve_config([], ["prompt=a white cube", "white_on_dark=true"]).renderer.field
    assert tuple(f.background_grey_range) == tuple(data["grey_range"])
    assert (f.background_white_prob, tuple(f.background_grey_range)) == dark_ground_views("white")
    keyed = "white" in data.get("grey_colours", ())
    assert f.background_white_prob == (0.0 if keyed else data["white_fraction"])


def test_dark_ground_views_follow_a_colour_keyed_or_mixed_card(tmp_path):
    import torch

    from dreamlmc.guidance.backends.builtin import dark_ground_views
    from dreamlmc.shapes.prior import PriorNet, save_prior

    net = PriorNet()
    keyed, mixed = tmp_path / "keyed.safetensors", tmp_path / "mixed.safetensors"
    save_prior(net, keyed, {"data": {"white_fraction": 1.0, "grey_range": [0.2, 0.3], "grey_colours": ["white"]}},
               dtype=torch.float32)
    save_prior(net, mixed, {"data": {"white_fraction": 0.5, "grey_range": [0.25, 0.35]}}, dtype=torch.float32)
    assert dark_ground_views("white", keyed) == (0.0, (0.2, 0.3))
    assert dark_ground_views("red", keyed) == (1.0, (0.2, 0.3))
    assert dark_ground_views("white", mixed) == (0.5, (0.25, 0.35))


def test_a_colour_keyed_prior_pairs_its_keyed_colours_with_the_colour_alone(tmp_path):
    """On a colour-keyed prior "" means the white ground, which a white prompt's data never shows: its unconditional
    is the colour alone (README row 139), so guidance amplifies the shape, not a push off the white ground."""
    import torch

    from dreamlmc.guidance.backends.builtin import BuiltinBackend
    from dreamlmc.shapes.prior import PriorNet, sample, save_prior, unconditional_prompt

    keyed = tmp_path / "keyed.safetensors"
    torch.manual_seed(0)
    net = PriorNet()
    save_prior(net, keyed, {"data": {"white_fraction": 1.0, "grey_range": [0.2, 0.3], "grey_colours": ["white"]}},
               dtype=torch.float32)
    be = BuiltinBackend(keyed)
    assert be.keyed_colours == ("white",) and BuiltinBackend().keyed_colours == ()
    assert be.unconditional_prompts(["a white cube, front view", "a red cube", ""]) == ["a white", "", ""]
    assert unconditional_prompt("a white cube, front view") == ""  # an unkeyed prior: unchanged
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with_colour = be.sample_images(["a white cube"], 7.5, 2, generator=g())
    assert not torch.equal(with_colour, sample(be.net, ["a white cube"], 7.5, 2, generator=g()))
    assert torch.equal(be.sample_images(["a red cube"], 7.5, 2, generator=g()),
                       sample(be.net, ["a red cube"], 7.5, 2, generator=g()))
