import numpy as np
import torch

from dreamlmc.shapes import metrics, world


def test_iou_of_a_shape_with_itself_is_one_and_a_shifted_copy_is_lower():
    def inside(shift):
        return lambda p: (world.sdf("cube", p - torch.tensor(shift)) < 0).numpy()

    same, yaw = metrics.best_yaw_iou(inside([0.0, 0.0, 0.0]), "cube", n=20000, yaw_step=90)
    assert same == 1.0 and yaw == 0.0
    shifted, _ = metrics.best_yaw_iou(inside([0.3, 0.0, 0.0]), "cube", n=20000, yaw_step=90)
    assert shifted < 0.8


def test_best_yaw_recovers_a_rotation():
    rotated = lambda p: (world.sdf("pyramid", metrics.rotate_y(p, -30.0)) < 0).numpy()
    unrotated, _ = metrics.best_yaw_iou(rotated, "pyramid", n=20000, yaw_step=90)
    best, yaw = metrics.best_yaw_iou(rotated, "pyramid", n=20000, yaw_step=5)
    assert best > 0.99 and yaw % 90 == 30 and unrotated < best


def test_chamfer_is_zero_for_identical_sets_and_grows_with_offset():
    a = metrics.surface_points_of_shape("sphere", 2000)
    assert metrics.chamfer(a, a) == 0.0
    assert abs(metrics.chamfer(a, a * 1.1) - 2 * 0.06) < 0.03


def test_delta_e():
    red = np.array([0.8, 0.1, 0.1])
    assert float(metrics.delta_e(red, red)) == 0.0
    assert float(metrics.delta_e(red, np.array([0.1, 0.1, 0.8]))) > 50


def test_saturation_and_sharpness_move_the_right_way():
    g = torch.Generator().manual_seed(0)
    img = 0.3 + 0.4 * torch.rand(1, 3, 32, 32, generator=g)
    grey = img.mean(1, keepdim=True)
    oversaturated = (grey + 2.0 * (img - grey)).clamp(0, 1)
    assert metrics.saturation(oversaturated) > metrics.saturation(img)
    blurred = torch.nn.functional.avg_pool2d(img, 3, stride=1, padding=1)
    assert metrics.sharpness(blurred) < metrics.sharpness(img)


def test_render_diversity():
    a = torch.zeros(1, 3, 4, 4)
    assert metrics.render_diversity([a, a]) == 0.0
    assert metrics.render_diversity([a, a + 0.5, a + 1.0]) > 0.5


def test_solid_inside_fills_a_hollow_shell():
    r = 48
    lin = (torch.arange(r) + 0.5) / r * 2 - 1
    X, Y, Z = torch.meshgrid(lin, lin, lin, indexing="ij")
    d = world.sdf("sphere", torch.stack([X, Y, Z], -1).reshape(-1, 3)).reshape(r, r, r).numpy()
    shell = ((d < 0) & (d > -0.08)).astype(np.float32) * 10  # density only just inside the surface: hollow
    inside = metrics.solid_inside_fn(shell, 5.0)
    iou, _ = metrics.best_yaw_iou(inside, "sphere", n=20000, yaw_step=90)
    assert iou > 0.85
    hollow = lambda p: ((world.sdf("sphere", p) < 0) & (world.sdf("sphere", p) > -0.08)).numpy()
    assert metrics.best_yaw_iou(hollow, "sphere", n=20000, yaw_step=90)[0] < 0.5


def test_normal_consistency_is_one_on_the_true_surface_and_lower_for_another_shape():
    pts, nrm = metrics.surface_points_of_shape("cube", 3000, normals=True)
    assert metrics.normal_consistency(pts, nrm, pts, nrm) > 0.999
    # a cylinder's normals against a cube's: the side walls are curved, the caps agree
    cyl, cyl_n = metrics.surface_points_of_shape("cylinder", 3000, normals=True)
    assert metrics.normal_consistency(cyl, cyl_n, pts, nrm) < 0.93
    # random orientations average |cos| = 0.5
    rnd = np.random.default_rng(0).normal(size=nrm.shape)
    rnd /= np.linalg.norm(rnd, axis=-1, keepdims=True)
    assert abs(metrics.normal_consistency(pts, rnd, pts, nrm) - 0.5) < 0.05


def test_sdf_normals_follow_the_yaw():
    pts = np.array([[0.5, 0.0, 0.0]], np.float32)
    n0 = metrics.sdf_normals("cube", pts)
    assert np.allclose(n0, [[1.0, 0.0, 0.0]], atol=1e-3)
    rotated_pts = metrics.rotate_y(torch.from_numpy(pts), 30.0).numpy()
    n30 = metrics.sdf_normals("cube", rotated_pts, yaw=30.0)
    assert np.allclose(n30, metrics.rotate_y(torch.from_numpy(n0), 30.0).numpy(), atol=1e-3)


def test_nearest_shape_and_hole():
    for shape in ("cube", "torus", "cone"):
        inside = lambda p, s=shape: (world.sdf(s, metrics.rotate_y(p, -20.0)) < 0).numpy()
        name, scores = metrics.nearest_shape(inside, n=20000, yaw_step=10)
        assert name == shape and scores[shape] > 0.95
    torus = lambda p: (world.sdf("torus", p) < 0).numpy()
    disc = lambda p: (world.sdf("cylinder", p / torch.tensor([1.5, 0.36, 1.5])) < 0).numpy()
    assert metrics.has_hole(torus) and not metrics.has_hole(disc)


def test_chamfer_floor_is_what_a_perfect_mesh_scores():
    from dreamlmc.shapes.metrics import chamfer, chamfer_floor, surface_points_of_shape

    floor = chamfer_floor("cube")
    assert 0.01 < floor < 0.05  # well above 0: the Chamfer bar (0.05) is measured against this
    a = np.asarray(surface_points_of_shape("cube", 5000, seed=0), np.float32)
    assert chamfer(a, a) == 0.0 and chamfer_floor("cube", n=20000) < floor / 1.5  # it falls as 1/sqrt(n)
