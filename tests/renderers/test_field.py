"""The field's two geometries: density (blob at init) and sdf (sphere at init, VolSDF density, eikonal)."""
import math

import pytest
import torch

from dreamlmc.cameras import CameraConfig, orbit_cameras
from dreamlmc.renderers.field import FieldConfig, NeRFField, eikonal
from dreamlmc.renderers.renderer import Renderer, RendererConfig


def scalar(t) -> float:
    """A 0-d tensor's value; detached, since many of the tensors read here carry gradients."""
    return float(t.detach()) if isinstance(t, torch.Tensor) else float(t)


def _sdf_field(**kw):
    torch.manual_seed(0)
    return NeRFField(FieldConfig(geometry="sdf", **kw))


def test_sdf_field_starts_as_a_sphere_with_unit_gradient():
    f = _sdf_field()
    x = torch.randn(500, 3)
    x = 0.8 * x / x.norm(dim=-1, keepdim=True) * torch.rand(500, 1)
    torch.testing.assert_close(f.sdf(x), x.norm(dim=-1) - 0.5, atol=1e-6, rtol=0)
    grad = f.geometry_gradient(x[x.norm(dim=-1) > 0.1])
    assert scalar(eikonal(grad)) < 1e-3
    n = f.normals(torch.tensor([[0.5, 0.0, 0.0], [0.0, -0.5, 0.0]]))
    torch.testing.assert_close(n, torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), atol=1e-2, rtol=0)


def test_sdf_density_is_opaque_inside_and_falls_off_over_beta():
    f = _sdf_field(sdf_beta=0.05)
    with torch.no_grad():
        d = f.density(torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.75, 0.0, 0.0]]))
    assert d[0] == pytest.approx(1 / 0.05, rel=1e-3)  # deep inside: 1 / beta
    assert d[1] == pytest.approx(0.5 / 0.05, rel=0.05)  # on the surface: half
    assert d[2] == pytest.approx(0.5 / 0.05 * math.exp(-0.25 / 0.05), rel=0.1)  # 5 beta outside


def test_beta_schedule_is_geometric_and_a_function_of_progress():
    f = _sdf_field(sdf_beta=0.1, sdf_beta_end=0.01)
    f.set_progress(0.5)
    assert f.beta == pytest.approx(math.sqrt(0.1 * 0.01))
    f.set_progress(2.0)
    assert f.beta == pytest.approx(0.01)
    f.set_progress(0.0)
    assert f.beta == pytest.approx(0.1)


def test_eikonal_penalises_a_scaled_distance():
    assert scalar(eikonal(torch.tensor([[3.0, 0.0, 4.0]]))) == pytest.approx(16.0)
    assert scalar(eikonal(torch.zeros(0, 3))) == 0.0


def test_sdf_renderer_renders_the_sphere_and_gives_eikonal_gradients():
    torch.manual_seed(0)
    cfg = RendererConfig()
    cfg.field.geometry = "sdf"
    ren = Renderer(cfg)
    cams = orbit_cameras(CameraConfig(), 1, 24, 24)
    out = ren(cams, "lambertian", torch.Generator().manual_seed(0))
    assert out["opacity"][0, 0, 12, 12] > 0.95 and out["opacity"][0, 0, 0, 0] < 0.05
    assert torch.isfinite(out["eikonal"]) and scalar(out["eikonal"]) < 0.05
    (out["rgb"].mean() + out["eikonal"]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ren.field.mlp.parameters())


def test_density_geometry_has_no_sdf():
    f = NeRFField(FieldConfig())
    with pytest.raises(ValueError):
        f.sdf(torch.zeros(1, 3))


def test_progressive_levels_switch_on_evenly_and_mask_the_fine_ones():
    torch.manual_seed(0)
    f = NeRFField(FieldConfig(progressive_start=2, progressive_until=0.5))  # 5 levels by default
    seen = []
    for p in (0.0, 0.1, 0.2, 0.3, 0.45, 0.5, 0.9):
        f.set_progress(p)
        seen.append(f.active_levels)
    assert seen == [2, 2, 3, 3, 4, 5, 5]
    with torch.no_grad():
        for p in f.encoding.levels:
            p.normal_()
    x = torch.rand(64, 3) * 1.6 - 0.8
    f.set_progress(0.0)
    coarse = f.density(x)
    with torch.no_grad():  # changing a masked level changes nothing
        f.encoding.levels[4].normal_()
    torch.testing.assert_close(f.density(x), coarse)
    f.set_progress(1.0)
    assert not torch.allclose(f.density(x), coarse)


def test_neus_opacity_of_a_sphere_is_half_exactly_at_the_silhouette():
    """NeuS's discrete opacity is unbiased: a ray grazing the zero level set is 50 % opaque, a ray through the
    centre fully, one well outside not at all; VolSDF at the same scale makes the grazing ray more opaque."""
    from dreamlmc.renderers.renderer import _neus_density
    from dreamlmc.renderers.raymarch import composite_weights

    r, S = 0.5, 4096
    t = torch.linspace(-1.0, 1.0, S)[None].expand(3, S)
    delta = torch.full((3, S), 2.0 / S)
    offsets = torch.tensor([0.0, r, r + 0.2])[:, None]  # ray's closest distance to the centre
    sdf = torch.sqrt(t ** 2 + offsets ** 2) - r
    w, _ = composite_weights(_neus_density(sdf, 0.02, delta), delta)
    opacity = w.sum(-1)
    assert opacity[0] > 0.99 and abs(scalar(opacity[1]) - 0.5) < 0.02 and opacity[2] < 1e-3
    f = NeRFField(FieldConfig(geometry="sdf", sdf_beta=0.02))
    w_vol, _ = composite_weights(f.density_from_geometry(sdf), delta)
    assert w_vol.sum(-1)[1] > 0.6  # VolSDF's silhouette lies outside the surface


def test_neus_renderer_renders_the_init_sphere():
    torch.manual_seed(0)
    cfg = RendererConfig()
    cfg.field.geometry, cfg.field.sdf_rendering, cfg.field.sdf_beta = "sdf", "neus", 0.02
    ren = Renderer(cfg)
    ren.update_occupancy(0, force=True)
    cams = orbit_cameras(CameraConfig(), 1, 32, 32)
    out = ren(cams, "lambertian", torch.Generator().manual_seed(0))
    assert out["opacity"][0, 0, 16, 16] > 0.95 and out["opacity"][0, 0, 0, 0] < 0.05
    assert torch.isfinite(out["rgb"]).all()
    out["rgb"].mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in ren.parameters() if p.grad is not None)


def test_sdf_density_has_finite_gradients_far_from_the_surface():
    # |sdf| / β far above 88 overflowed exp() in the branch torch.where did not pick: NaN gradients, skipped steps
    f = _sdf_field(sdf_beta=0.01)
    g = torch.tensor([-5.0, -1.0, 0.0, 0.3, 5.0], requires_grad=True)
    d = f.density_from_geometry(g)
    d.sum().backward()
    assert torch.isfinite(d).all() and torch.isfinite(g.grad).all()
    assert scalar(d[0]) == pytest.approx(1.0 / 0.01) and scalar(d[-1]) == 0.0


def test_random_background_is_per_view_in_training_and_white_otherwise():
    f = NeRFField(FieldConfig(background="random"))
    dirs = torch.randn(3, 4, 4, 3)
    bg = f.train().background(dirs, torch.Generator().manual_seed(0))
    assert bg.shape == dirs.shape
    assert torch.allclose(bg, bg[:, :1, :1].expand_as(bg))  # one solid colour per view
    assert not torch.allclose(bg[0], bg[1]) and not torch.allclose(bg, torch.ones_like(bg))
    assert torch.equal(f.eval().background(dirs), torch.ones_like(dirs))  # previews and evaluation: white

    g = NeRFField(FieldConfig(background="grey", background_grey_range=(0.4, 0.6))).train()
    bg = g.background(torch.randn(64, 2, 2, 3), torch.Generator().manual_seed(0))
    level = bg[:, 0, 0]
    assert torch.equal(level[:, 0], level[:, 1]) and torch.equal(level[:, 1], level[:, 2])  # grey
    assert level.min() >= 0.4 and level.max() <= 0.6 and level.std() > 0.03
    assert torch.equal(g.eval().background(dirs), torch.ones_like(dirs))

    # a mix: about that share of the views white, the others grey in the range
    m = NeRFField(FieldConfig(background="grey", background_grey_range=(0.2, 0.3), background_white_prob=0.5)).train()
    level = m.background(torch.randn(400, 2, 2, 3), torch.Generator().manual_seed(0))[:, 0, 0, 0]
    white = level == 1.0
    assert 0.4 < white.float().mean() < 0.6
    assert level[~white].min() >= 0.2 and level[~white].max() <= 0.3

    # a schedule: all grey at the start of training, all white at the end, about half white half-way
    r = NeRFField(FieldConfig(background="grey", background_grey_range=(0.2, 0.3), background_white_prob=0.0,
                              background_white_prob_end=1.0)).train()
    share = {}
    for f in (0.0, 0.5, 1.0):
        r.set_progress(f)
        level = r.background(torch.randn(400, 2, 2, 3), torch.Generator().manual_seed(0))[:, 0, 0, 0]
        share[f] = (level == 1.0).float().mean().item()
    assert share[0.0] == 0.0 and share[1.0] == 1.0 and 0.4 < share[0.5] < 0.6


def test_renders_report_the_background_they_were_composited_on():
    torch.manual_seed(0)
    cfg = RendererConfig()
    cfg.field.geometry, cfg.field.background = "sdf", "random"
    ren = Renderer(cfg).train()
    cams = orbit_cameras(CameraConfig(), 2, 24, 24)
    out = ren(cams, "lambertian", torch.Generator().manual_seed(0))
    bg = out["background"][:, :, 0, 0]  # (B, 3): one colour per view
    assert out["background"].shape == out["rgb"].shape and not torch.allclose(bg[0], bg[1])
    empty = out["opacity"][:, 0] < 1e-4  # the image corners: the sphere at init does not reach them
    assert empty[:, 0, 0].all()
    assert torch.allclose(out["rgb"][:, :, 0, 0], bg, atol=1e-3)  # what the ceiling's ground truth is drawn on


def test_normal_smoothness_is_near_zero_on_the_sphere_and_penalises_bumps_with_gradients():
    torch.manual_seed(0)
    cfg = RendererConfig(smooth_weight=1.0, smooth_points=256, smooth_radius=0.02)
    cfg.field.geometry = "sdf"
    ren = Renderer(cfg)
    cams = orbit_cameras(CameraConfig(), 1, 24, 24)
    smooth = scalar(ren(cams, "lambertian", torch.Generator().manual_seed(0))["smoothness"])
    assert 0.0 <= smooth < 0.01  # the initial sphere (r = 0.5): neighbouring normals agree
    with torch.no_grad():  # bumps: large random hash-grid features read by a non-zero output layer
        for p in ren.field.encoding.parameters():
            p.normal_(0.0, 0.5)
        for p in ren.field.mlp.parameters():
            p.normal_(0.0, 0.1)
    out = ren(cams, "lambertian", torch.Generator().manual_seed(0))
    assert scalar(out["smoothness"]) > 5 * max(smooth, 1e-3)
    out["smoothness"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ren.field.encoding.parameters())
    ren.eval()  # evaluation renders do not compute it
    assert scalar(ren(cams, "lambertian", torch.Generator().manual_seed(0))["smoothness"]) == 0.0


def test_z_variance_is_the_weighted_depth_variance_of_opaque_rays():
    from dreamlmc.renderers.renderer import _z_variance

    t = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    w = torch.tensor([[0.0, 0.9, 0.0],      # a crisp surface: no spread
                      [0.45, 0.0, 0.45],    # two shells 2 apart: variance 1
                      [0.2, 0.0, 0.2]],     # a faint ray (opacity 0.4): not counted
                     requires_grad=True)
    zv = _z_variance(w, t, w.sum(-1, keepdim=True))
    assert abs(scalar(zv) - 0.5) < 1e-6  # mean of 0 and 1
    zv.backward()
    assert w.grad[2].abs().sum() == 0 and w.grad[1].abs().sum() > 0
    assert scalar(_z_variance(w[2:], t[2:], w[2:].sum(-1, keepdim=True))) == 0.0  # no opaque ray


def test_z_variance_is_computed_only_when_weighted_and_training():
    torch.manual_seed(0)
    cams = orbit_cameras(CameraConfig(), 1, 24, 24)
    off = Renderer(RendererConfig()).train()
    assert scalar(off(cams, "lambertian", torch.Generator().manual_seed(0))["z_variance"]) == 0.0
    cfg = RendererConfig(z_variance_weight=1.0)
    cfg.field.geometry = "sdf"
    ren = Renderer(cfg).train()
    out = ren(cams, "lambertian", torch.Generator().manual_seed(0))
    assert scalar(out["z_variance"]) > 0  # the initial sphere's shell has a thickness
    out["z_variance"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ren.field.parameters())
    ren.eval()
    assert scalar(ren(cams, "lambertian", torch.Generator().manual_seed(0))["z_variance"]) == 0.0


def test_opacity_entropy_is_zero_for_empty_or_opaque_pixels_and_pushes_half_ones_away():
    from dreamlmc.renderers.renderer import opacity_entropy

    assert scalar(opacity_entropy(torch.tensor([0.0, 1.0, 0.0]))) < 1e-3
    assert abs(scalar(opacity_entropy(torch.tensor([0.5]))) - math.log(2)) < 1e-6
    o = torch.tensor([0.3, 0.7], requires_grad=True)
    opacity_entropy(o).backward()
    assert o.grad[0] > 0 > o.grad[1]  # descent moves 0.3 towards 0 and 0.7 towards 1
