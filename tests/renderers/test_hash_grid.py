import sys
import warnings
from pathlib import Path

import pytest
import torch

from dreamlmc.renderers.hash_grid import HashEncoding, HashGridConfig


@pytest.fixture
def enc():
    torch.manual_seed(0)
    e = HashEncoding(HashGridConfig(num_levels=4, log2_table_size=11, base_resolution=4, growth_factor=2.0))
    with torch.no_grad():
        for p in e.levels:
            p.normal_()
    return e


def test_layout_has_dense_then_hashed_levels(enc):
    dense = [d for *_, d in enc.layout]
    assert dense == [True, True, False, False]  # 4^3, 8^3 fit in 2048 rows; 16^3, 32^3 do not
    assert enc.levels[0].shape == (1, 2, 4, 4, 4) and enc.levels[3].shape == (2048, 2)


def test_shapes_and_dtype(enc):
    out = enc(torch.rand(100, 3))
    assert out.shape == (100, 8) and out.dtype == torch.float32 and enc.output_dim == 8


def test_fast_path_matches_the_reference(enc):
    x = torch.rand(5000, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(enc.encode(x), enc.reference_encode(x), rtol=1e-5, atol=1e-5)


def test_gradients_match_the_reference(enc):
    x = torch.rand(300, 3, generator=torch.Generator().manual_seed(2))
    w = torch.randn(300, 8)
    g_fast = torch.autograd.grad((enc.encode(x) * w).sum(), list(enc.levels))
    g_ref = torch.autograd.grad((enc.reference_encode(x) * w).sum(), list(enc.levels))
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        assert a.abs().sum() > 0  # every level receives gradient


def test_dense_levels_reproduce_a_linear_function_exactly(enc):
    a = torch.tensor([0.3, -1.2, 2.0])
    with torch.no_grad():
        for level, (scale, res, _, dense) in enumerate(enc.layout):
            if not dense:
                continue
            # value at corner (i, j, k) is a . (i, j, k) / scale, i.e. a . x at that corner's position
            i = torch.arange(res, dtype=torch.float32)
            Z, Y, X = torch.meshgrid(i, i, i, indexing="ij")
            lin = (a[0] * (X - 0.5) + a[1] * (Y - 0.5) + a[2] * (Z - 0.5)) / scale
            enc.levels[level][0, 0] = lin
            enc.levels[level][0, 1] = -lin
    x = 0.05 + 0.75 * torch.rand(1000, 3)  # interior: every corner inside the grid (no border clamping)
    out = enc.encode(x)
    for level in (0, 1):
        torch.testing.assert_close(out[:, 2 * level], x @ a, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[:, 2 * level + 1], -(x @ a), rtol=1e-5, atol=1e-5)


def test_missing_tinycudann_on_cuda_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "tinycudann", None)  # import raises ImportError
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        enc = HashEncoding(HashGridConfig(num_levels=2), device="cuda")  # nothing is allocated on the device
    assert enc.tcnn is None and len(enc.levels) == 2
    assert [str(x.message) for x in w if "tinycudann" in str(x.message)] == [
        "tinycudann is not importable; using the pure-PyTorch hash grid on CUDA"]
    assert enc(torch.rand(10, 3)).shape == (10, 4)


def test_package_imports_and_trains_without_optional_accelerators(tmp_path):
    """A fresh interpreter where tinycudann and nerfacc cannot be imported: the package imports and a tiny run
    trains and exports."""
    import subprocess

    code = (
        "import sys; sys.modules['tinycudann'] = None; sys.modules['nerfacc'] = None\n"
        "from dreamlmc.cli import main\n"
        f"rc = main(['train', '--prompt', 'a red cube', '--out', {str(tmp_path / 'run')!r}, '--config', "
        f"{str(Path(__file__).resolve().parents[2] / 'configs' / 'quick.yaml')!r}, '--quiet', 'steps=3', "
        "'turntable_frames=2', 'export.resolution=32'])\n"
        "assert 'tinycudann' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "sys.exit(rc)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "model.glb").exists()
