import pytest
import torch

from dreamlmc.cameras import CameraConfig, CameraSampler, orbit_cameras, view_label, view_words


@pytest.mark.parametrize("el,az,label", [(0, 0, "front"), (10, 44, "front"), (10, -44, "front"), (0, 46, "side"),
                                         (0, -90, "side"), (0, 134, "side"), (0, 136, "back"), (0, -180, "back"),
                                         (0, 180, "back"), (61, 0, "overhead"), (59, 170, "back")])
def test_view_labels_follow_thresholds(el, az, label):
    assert view_label(el, az) == label


@pytest.mark.parametrize("el,az,label", [(0, 0, "front"), (10, 22, "front"), (0, -22, "front"),
                                         (0, 23, "three-quarter"), (0, -67, "three-quarter"), (0, 68, "side"),
                                         (0, -112, "side"), (0, 113, "three-quarter"), (0, -157, "three-quarter"),
                                         (0, 158, "back"), (0, 180, "back"), (61, 45, "overhead")])
def test_fine_view_labels_use_45_degree_bins(el, az, label):
    assert view_label(el, az, fine=True) == label


def test_fine_views_reach_the_batches_labels():
    cams = CameraSampler(CameraConfig(fine_views=True, elevation_range=(0.0, 30.0)), 4, 4, seed=0).sample(64)
    expected = [view_label(float(e), float(a), fine=True) for e, a in zip(cams.elevation, cams.azimuth)]
    assert cams.views == expected and "three-quarter" in cams.views
    coarse = CameraSampler(CameraConfig(elevation_range=(0.0, 30.0)), 4, 4, seed=0).sample(64)
    assert "three-quarter" not in coarse.views
    orbit = orbit_cameras(CameraConfig(fine_views=True), 8, 4, 4)
    assert orbit.views == [view_label(float(e), float(a), fine=True) for e, a in zip(orbit.elevation, orbit.azimuth)]
    assert "three-quarter" in orbit.views


@pytest.mark.parametrize("fine", [False, True])
@pytest.mark.parametrize("elevations", [(0.0, 30.0), (-10.0, 90.0)])
def test_view_words_are_the_labels_the_sampler_draws(fine, elevations):
    cfg = CameraConfig(fine_views=fine, elevation_range=elevations)
    drawn = set(CameraSampler(cfg, 4, 4, seed=0).sample(256).views)
    assert drawn == set(view_words(cfg))


def test_overhead_views_are_drawn_at_their_rate_and_labelled():
    base = CameraConfig(elevation_range=(0.0, 30.0))
    cfg = CameraConfig(elevation_range=(0.0, 30.0), overhead_prob=0.25, overhead_range=(62.0, 80.0))
    cams = CameraSampler(cfg, 4, 4, seed=0).sample(400)
    high = cams.elevation > 60.0
    assert 0.18 < high.float().mean() < 0.32  # 100 expected of 400
    assert bool(((cams.elevation[high] >= 62.0) & (cams.elevation[high] <= 80.0)).all())
    assert bool(((cams.elevation[~high] >= 0.0) & (cams.elevation[~high] <= 30.0)).all())
    assert [v == "overhead" for v in cams.views] == high.tolist()
    assert "overhead" in view_words(cfg) and "overhead" not in view_words(base)
    # off (the default): no extra random draws, so every earlier run's cameras are unchanged
    off = CameraConfig(elevation_range=(0.0, 30.0), overhead_prob=0.0, overhead_range=(62.0, 80.0))
    a, b = CameraSampler(base, 4, 4, seed=1), CameraSampler(off, 4, 4, seed=1)
    for _ in range(3):
        assert torch.equal(a.sample(4).c2w, b.sample(4).c2w)


def test_same_seed_same_cameras_and_different_seed_differs():
    a = CameraSampler(CameraConfig(), 8, 8, seed=3)
    b = CameraSampler(CameraConfig(), 8, 8, seed=3)
    for _ in range(3):
        ca, cb = a.sample(4), b.sample(4)
        assert torch.equal(ca.rays_d, cb.rays_d) and ca.views == cb.views
    c = CameraSampler(CameraConfig(), 8, 8, seed=4).sample(4)
    assert not torch.equal(CameraSampler(CameraConfig(), 8, 8, seed=3).sample(4).rays_d, c.rays_d)


def test_state_dict_resumes_the_sequence():
    a = CameraSampler(CameraConfig(), 8, 8, seed=0)
    a.sample(2)
    state = a.state_dict()
    expected = a.sample(2)
    b = CameraSampler(CameraConfig(), 8, 8, seed=99)
    b.load_state_dict(state)
    assert torch.equal(b.sample(2).c2w, expected.c2w)


def test_ranges_and_stratified_azimuth():
    cfg = CameraConfig()
    cams = CameraSampler(cfg, 4, 4, seed=0).sample(8)
    assert ((cams.elevation >= cfg.elevation_range[0]) & (cams.elevation <= cfg.elevation_range[1])).all()
    assert ((cams.radius >= cfg.radius_range[0]) & (cams.radius <= cfg.radius_range[1])).all()
    # one azimuth per 45-degree bin (up to a common rotation)
    az = torch.sort((cams.azimuth - cams.azimuth[0]) % 360).values
    assert (az[1:] - az[:-1]).max() < 90


def test_rays_are_unit_and_the_centre_ray_sees_the_origin():
    cams = orbit_cameras(CameraConfig(), 3, 9, 9)
    assert torch.allclose(cams.rays_d.norm(dim=-1), torch.ones(3, 9, 9), atol=1e-6)
    o, d = cams.rays_o[:, 4, 4], cams.rays_d[:, 4, 4]
    closest = o + ((-o) * d).sum(-1, keepdim=True) * d
    assert closest.norm(dim=-1).max() < 1e-5
    assert cams.views == ["front", "side", "side"]  # azimuths 0, 120, -120


def test_progressive_views_widen_from_the_front_to_the_full_range():
    cfg = CameraConfig(progressive_until=0.5, progressive_init=0.2)
    s = CameraSampler(cfg, 4, 4, seed=0)
    assert s.azimuth_range(0.0) == pytest.approx((-36.0, 36.0))
    assert s.azimuth_range(0.25) == pytest.approx((-108.0, 108.0))
    assert s.azimuth_range(0.5) == s.azimuth_range(1.0) == pytest.approx((-180.0, 180.0))
    early = torch.cat([s.sample(4, progress=0.0).azimuth for _ in range(20)])
    assert early.abs().max() <= 36.0 and early.abs().max() > 20.0  # inside the narrow range, spread across it
    assert set(CameraSampler(cfg, 4, 4, seed=0).sample(64, progress=0.0).views) == {"front"}
    late = torch.cat([s.sample(4, progress=0.9).azimuth for _ in range(20)])
    assert late.abs().max() > 150.0
    # off by default: the full range from the first step, and the same draws as before the option existed
    off = CameraSampler(CameraConfig(), 4, 4, seed=0)
    assert off.azimuth_range(0.0) == (-180.0, 180.0)
    assert torch.equal(off.sample(4, progress=0.0).c2w, CameraSampler(CameraConfig(), 4, 4, seed=0).sample(4).c2w)


def test_the_trainer_narrows_its_early_views_with_progressive_views(tmp_path):
    from pathlib import Path

    from dreamlmc.config import load_yaml
    from dreamlmc.trainer import Trainer, resolve_config

    quick = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"
    cfg = resolve_config([load_yaml(quick)], ["prompt=a red cube", "steps=4", "camera.progressive_until=0.5"])
    tr = Trainer(cfg, tmp_path, progress=False)
    seen, sample = [], tr.sampler.sample

    def spy(batch_size, progress=1.0):
        cams = sample(batch_size, progress)
        seen.append((progress, float(cams.azimuth.abs().max())))
        return cams

    tr.sampler.sample = spy
    for _ in range(3):
        tr.train_step()
    assert [p for p, _ in seen] == [0.0, 0.25, 0.5]
    assert seen[0][1] <= 36.0  # the first step looks at the front only (20 % of the full circle)


def test_sequence_views_every_side_evenly_and_resumes():
    """camera.sequence: any 16 consecutive single-view steps put 3-5 views in each azimuth quadrant and each half
    of the elevation range (independent draws leave a quadrant with 0-1 now and then), within the ranges, and a
    resumed sampler continues the sequence."""
    cfg = CameraConfig(elevation_range=(0.0, 30.0), sequence=True)

    def worst(sampler):
        az = torch.cat([sampler.sample(1).azimuth for _ in range(160)]).view(10, 16)
        quad = ((az + 180.0) // 90.0).long().clamp(0, 3)
        return min(int(torch.bincount(q, minlength=4).min()) for q in quad), max(
            int(torch.bincount(q, minlength=4).max()) for q in quad)

    lo, hi = worst(CameraSampler(cfg, 4, 4, seed=0))
    assert lo >= 3 and hi <= 5
    rlo, rhi = worst(CameraSampler(CameraConfig(elevation_range=(0.0, 30.0)), 4, 4, seed=0))
    assert rlo <= 1 or rhi >= 7
    a = CameraSampler(cfg, 4, 4, seed=2)
    el = torch.cat([a.sample(1).elevation for _ in range(16)])
    assert el.min() >= 0 and el.max() <= 30 and 5 <= int((el < 15).sum()) <= 11
    state = a.state_dict()
    expected = a.sample(2)
    b = CameraSampler(cfg, 4, 4, seed=99)
    b.load_state_dict(state)
    assert torch.equal(b.sample(2).c2w, expected.c2w)
