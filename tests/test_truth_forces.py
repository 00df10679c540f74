"""tools/bench_truth_forces.py: deformations of the true shapes and the sign of the forces on them."""
import torch

from dreamlmc.shapes import world
from dreamlmc.trainer import resolve_config
from tools.bench_truth_forces import forces, scaled_sdf


def test_scaled_sdfs_scale_the_shape_uniformly_or_in_height():
    sphere = scaled_sdf(world.SDFS["sphere"], "scale", 1.2)
    assert abs(float(sphere(torch.tensor([[0.72, 0.0, 0.0]])))) < 1e-6  # radius 0.6 -> 0.72
    tall = scaled_sdf(world.SDFS["cube"], "height", 1.2)
    p = torch.tensor([[0.0, 0.55, 0.0], [0.55, 0.0, 0.0]])
    assert float(world.SDFS["cube"](p[:1])) > 0 and float(tall(p[:1])) < 0  # half-height 0.5 -> 0.6
    assert float(tall(p[1:])) > 0  # the width is unchanged


def test_a_larger_object_costs_more_opacity_penalty():
    from dreamlmc.guidance.backends import load_backend

    cfg = resolve_config([], ["prompt=a red cube"])
    r = forces(cfg, load_backend("builtin"), "a red cube", views=2, draws=1, progress=1.0, delta=0.05, seed=0)
    assert r["scale"]["penalty"] > 0 and r["height"]["penalty"] > 0
    assert r["scale"]["growth"] == -r["scale"]["guidance"] / r["scale"]["penalty"]
    # the background ring's part of the growth: a part of it, not all (the object's own pixels change too)
    out = r["scale"]["growth_outside"]
    assert torch.isfinite(torch.tensor(out)) and out != r["scale"]["growth"]
