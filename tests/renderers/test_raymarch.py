import math

import pytest
import torch

from dreamlmc.cameras import CameraConfig, orbit_cameras
from dreamlmc.renderers.raymarch import (OccupancyConfig, OccupancyGrid, composite_weights, ray_sphere_near_far,
                                         stratified_samples)
from dreamlmc.renderers.renderer import Renderer, RendererConfig


def test_constant_density_composites_to_the_closed_form():
    sigma, length, S = 2.0, 1.5, 64
    near, far = torch.zeros(3), torch.full((3,), length)
    t, delta = stratified_samples(near, far, S, torch.Generator().manual_seed(0))
    w, trans = composite_weights(torch.full((3, S), sigma), delta)
    torch.testing.assert_close(w.sum(-1), torch.full((3,), 1 - math.exp(-sigma * length)), rtol=1e-5, atol=1e-6)
    assert (trans[:, 1:] <= trans[:, :-1]).all()


def test_weights_sum_at_most_one():
    d = torch.rand(50, 32) * 100
    w, _ = composite_weights(d, torch.full((50, 32), 0.05))
    assert (w >= 0).all() and (w.sum(-1) <= 1 + 1e-6).all()


def test_ray_sphere_near_far():
    o = torch.tensor([[0.0, 0.0, 3.0], [0.0, 2.0, 3.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    near, far, hit = ray_sphere_near_far(o, d, 1.0)
    assert hit.tolist() == [True, False]
    torch.testing.assert_close(near[0], torch.tensor(2.0))
    torch.testing.assert_close(far[0], torch.tensor(4.0))


class SphereField(torch.nn.Module):
    """Stand-in field: a solid sphere of radius r (density 500 inside, 0 outside), red albedo."""

    is_sdf = False

    def __init__(self, r):
        super().__init__()
        self.r = r

    def __call__(self, x):
        return self.density(x), torch.tensor([1.0, 0.0, 0.0]).expand(x.shape[0], 3)

    def density(self, x):
        return 500.0 * (x.norm(dim=-1) < self.r).float()

    # the renderer's view of a field: geometry (here the density itself) and how density follows from it
    def geometry_and_albedo(self, x):
        return self(x)

    def density_from_geometry(self, g):
        return g

    def set_progress(self, fraction):
        pass

    def normals(self, x):
        return torch.nn.functional.normalize(x, dim=-1)

    def background(self, dirs, generator=None):
        return torch.ones_like(dirs)


@pytest.mark.parametrize("occupancy", [False, True])
def test_sphere_silhouette_area_and_depth(occupancy):
    r, dist, res = 0.5, 2.5, 64
    cfg = RendererConfig(num_samples=192)
    cfg.occupancy.enabled = occupancy
    ren = Renderer(cfg)
    ren.field = SphereField(r)
    if occupancy:
        ren.update_occupancy(0, force=True)
    cams = orbit_cameras(CameraConfig(orbit_fovy=40.0), 1, res, res, elevation=0.0, radius=dist)
    with torch.no_grad():
        out = ren(cams, "albedo", perturb=False)
    focal = 0.5 * res / math.tan(math.radians(20.0))
    r_px = focal * math.tan(math.asin(r / dist))
    area = float((out["opacity"] > 0.5).sum())
    assert abs(area - math.pi * r_px ** 2) / (math.pi * r_px ** 2) < 0.05
    centre_depth = float(out["depth"][0, 0, res // 2 - 1:res // 2 + 1, res // 2 - 1:res // 2 + 1].mean())
    assert abs(centre_depth - (dist - r)) < 0.03
    # white background outside, red inside
    assert out["rgb"][0, :, 0, 0].tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-4)
    assert out["rgb"][0, 1, res // 2, res // 2] < 0.05


def test_occupancy_grid_marks_the_object_and_skips_empty_space():
    grid = OccupancyGrid(OccupancyConfig(resolution=16, dilate=0), bound=1.0, step_size=0.05)
    grid.update(SphereField(0.5).density, torch.Generator().manual_seed(0))
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.9, 0.9], [0.3, 0.0, 0.0]])
    assert grid.occupied(pts).tolist() == [True, False, True]
    frac = grid.occupancy_fraction()
    assert 0.03 < frac < 0.15  # sphere volume fraction of the box is 0.065


def test_gradients_reach_the_hash_table_and_mlp():
    torch.manual_seed(0)
    ren = Renderer(RendererConfig())
    cams = orbit_cameras(CameraConfig(), 1, 16, 16)
    out = ren(cams, "lambertian")
    (out["rgb"].mean() + out["orientation"]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ren.field.encoding.levels)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ren.field.mlp.parameters())


def test_blob_makes_first_renders_non_empty():
    torch.manual_seed(0)
    ren = Renderer(RendererConfig())
    with torch.no_grad():
        out = ren(orbit_cameras(CameraConfig(), 1, 16, 16), "albedo", perturb=False)
    assert out["opacity"][0, 0, 8, 8] > 0.9 and out["opacity"][0, 0, 0, 0] < 0.1


def test_multiple_shading_modes_in_one_pass_match_single_passes():
    torch.manual_seed(0)
    ren = Renderer(RendererConfig()).eval()
    cams = orbit_cameras(CameraConfig(), 1, 16, 16)
    with torch.no_grad():
        both = ren(cams, ("lambertian", "textureless"), perturb=False)
        tl = ren(cams, "textureless", perturb=False)
    torch.testing.assert_close(both["rgb_textureless"], tl["rgb"])



def test_volume_penalty_measures_the_sdf_spheres_share_of_the_box_and_its_gradient_shrinks_it():
    """renderer.volume_weight: the mean occupancy at random points of the box. The initial sdf sphere (radius r in
    a box of side 2b) fills 4/3 π r³ / (2b)³ of it, visible or not, and a step down its gradient lowers it."""
    from dreamlmc.renderers.field import FieldConfig
    for r in (0.3, 0.6):
        cfg = RendererConfig(field=FieldConfig(geometry="sdf", blob_radius=r, sdf_beta=0.01), volume_weight=1.0,
                             volume_points=200_000)
        ren = Renderer(cfg).train()
        vol = ren.volume_occupancy(torch.Generator().manual_seed(0))
        assert vol.item() == pytest.approx(4 / 3 * math.pi * r ** 3 / 8, rel=0.05)
    vol.backward()
    with torch.no_grad():
        for p in ren.field.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    assert ren.volume_occupancy(torch.Generator().manual_seed(0)).item() < vol.item() - 1e-3


def test_the_trainer_adds_the_volume_penalty_only_when_asked(tmp_path):
    from pathlib import Path

    from dreamlmc.config import load_yaml
    from dreamlmc.trainer import Trainer, resolve_config
    quick = Path(__file__).resolve().parents[2] / "configs" / "quick.yaml"
    for over, positive in (([], False), (["renderer.volume_weight=50"], True)):
        cfg = resolve_config([load_yaml(quick)], ["prompt=a red cube", "steps=4", *over])
        rec = Trainer(cfg, tmp_path / str(positive), progress=False).train_step()
        assert (rec["volume"] > 0.01) == positive
