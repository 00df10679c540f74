import numpy as np
import pygltflib
import pytest
import torch
import trimesh

from dreamlmc.shapes import world
from dreamlmc.errors import DreamlmcError
from dreamlmc.export import ExportConfig, extract_mesh, write_mesh

RED = torch.tensor([0.8, 0.1, 0.1])


def sphere_density(p):
    return torch.nn.functional.softplus(-world.sdf("sphere", p) * 600) * 200


def albedo(p):
    return RED.expand(p.shape[0], 3)


def test_glb_reloads_with_vertex_colours_and_bounds(tmp_path):
    mesh = extract_mesh(sphere_density, albedo, cfg=ExportConfig(resolution=64))
    path = tmp_path / "m.glb"
    write_mesh(mesh, path)
    loaded = trimesh.load(path, force="mesh")
    assert len(loaded.vertices) > 500
    ext = loaded.bounds[1] - loaded.bounds[0]
    assert np.allclose(ext, 1.2, atol=0.05) and np.allclose(loaded.bounds.mean(0), 0, atol=0.02)  # centred
    cols = loaded.visual.vertex_colors[:, :3].astype(float) / 255
    assert np.allclose(cols.mean(0), RED.numpy(), atol=0.01)
    gltf = pygltflib.GLTF2().load(str(path))
    assert gltf.meshes[0].primitives[0].attributes.COLOR_0 is not None


def test_floating_pieces_are_removed():
    def two(p):
        main = world.sdf("sphere", p)
        speck = (p - torch.tensor([0.8, 0.8, 0.8])).norm(dim=-1) - 0.06
        return torch.nn.functional.softplus(-torch.minimum(main, speck) * 600) * 200

    mesh = extract_mesh(two, albedo, cfg=ExportConfig(resolution=64))
    assert mesh.bounds[1].max() < 0.7


def test_textured_glb_keeps_its_texture(tmp_path):
    mesh = extract_mesh(sphere_density, albedo, cfg=ExportConfig(resolution=32, texture=True, texture_size=128))
    path = tmp_path / "t.glb"
    write_mesh(mesh, path)
    gltf = pygltflib.GLTF2().load(str(path))
    assert gltf.meshes[0].primitives[0].attributes.TEXCOORD_0 is not None and len(gltf.images) == 1
    loaded = trimesh.load(path, force="mesh")
    tex = np.asarray(loaded.visual.material.baseColorTexture.convert("RGB"), dtype=float) / 255
    uv = loaded.visual.uv
    px = (uv * (np.array(tex.shape[:2][::-1]) - 1)).round().astype(int)
    sampled = tex[tex.shape[0] - 1 - px[:, 1], px[:, 0]]
    assert np.allclose(np.median(sampled, 0), RED.numpy(), atol=0.03)


@pytest.mark.parametrize("density", [lambda p: torch.zeros(p.shape[0]), lambda p: torch.full((p.shape[0],), 5.0)])
def test_empty_or_full_grids_fail_loudly(density):
    with pytest.raises(DreamlmcError) as e:
        extract_mesh(density, albedo, cfg=ExportConfig(resolution=16))
    assert "threshold" in str(e.value)


@pytest.mark.parametrize("fmt", ["obj", "ply"])
def test_other_formats(tmp_path, fmt):
    mesh = extract_mesh(sphere_density, albedo, cfg=ExportConfig(resolution=32))
    write_mesh(mesh, tmp_path / f"m.{fmt}", fmt)
    assert len(trimesh.load(tmp_path / f"m.{fmt}", force="mesh").faces) == len(mesh.faces)


def test_a_grid_sampled_once_gives_the_same_mesh_and_must_match_the_resolution():
    from dreamlmc.export import density_grid

    cfg = ExportConfig(resolution=32)
    grid = density_grid(sphere_density, 32, 1.0)
    a, b = extract_mesh(sphere_density, albedo, cfg=cfg), extract_mesh(None, albedo, cfg=cfg, grid=grid)
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)
    with pytest.raises(ValueError, match="resolution 32"):
        extract_mesh(None, albedo, cfg=cfg, grid=density_grid(sphere_density, 16, 1.0))
