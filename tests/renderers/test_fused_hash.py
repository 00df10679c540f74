"""The fused C++ hash encoding (the CPU default) against the pure-PyTorch path: values and gradients, both backward
strategies, determinism, a trained field, and the fallback when it cannot be built."""
import warnings
from dataclasses import replace

import pytest
import torch

from dreamlmc.renderers import cpu_kernels
from dreamlmc.renderers.hash_grid import HashEncoding, HashGridConfig

kernel = cpu_kernels.hash_kernel()
needs_kernel = pytest.mark.skipif(kernel is None, reason="the fused CPU kernel could not be built here")

CONFIGS = {
    "dense (CPU default)": HashGridConfig(),
    "dense + hashed": HashGridConfig(num_levels=6, log2_table_size=12, base_resolution=6, growth_factor=1.6),
    "4 features": HashGridConfig(num_levels=3, features_per_level=4, log2_table_size=10),
    # 2^21 rows: too large for per-thread copies, so the backward takes the (level, feature) task split
    "large hashed": HashGridConfig(num_levels=4, log2_table_size=21, base_resolution=64, growth_factor=2.0),
}


def _encoding(cfg, seed=0):
    torch.manual_seed(seed)
    enc = HashEncoding(cfg)
    with torch.no_grad():
        for p in enc.levels:
            p.uniform_(-1, 1)
    return enc


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_fused_matches_torch_values_and_gradients(name, threads):
    enc = _encoding(CONFIGS[name])
    x = torch.rand(4000, 3, generator=torch.Generator().manual_seed(1))
    x[:4] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.5], [0.999999, 1e-7, 0.5]])  # box corners
    w = torch.randn(4000, enc.output_dim, generator=torch.Generator().manual_seed(2))
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fused = enc.encode_fused(x, kernel)
        g_fused = torch.autograd.grad((enc.encode_fused(x, kernel) * w).sum(), list(enc.levels))
    finally:
        torch.set_num_threads(old)
    torch.testing.assert_close(fused, enc.encode(x), rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(fused, enc.reference_encode(x), rtol=1e-5, atol=2e-5)
    g_torch = torch.autograd.grad((enc.encode(x) * w).sum(), list(enc.levels))
    for a, b in zip(g_fused, g_torch):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        assert a.abs().sum() > 0


@needs_kernel
def test_fused_backward_is_deterministic():
    enc = _encoding(CONFIGS["dense (CPU default)"])
    x = torch.rand(20000, 3, generator=torch.Generator().manual_seed(3))
    grads = [torch.autograd.grad(enc.encode_fused(x, kernel).square().sum(), list(enc.levels)) for _ in range(3)]
    for g in grads[1:]:
        assert all(torch.equal(a, b) for a, b in zip(grads[0], g))


@needs_kernel
def test_default_forward_uses_the_fused_path_and_torch_can_be_forced():
    enc = _encoding(CONFIGS["dense (CPU default)"])
    x = torch.rand(100, 3)
    calls = []
    original = enc.encode_fused
    enc.encode_fused = lambda *a: calls.append(1) or original(*a)
    enc(x)
    assert calls == [1]
    enc.cfg = replace(enc.cfg, implementation="torch")
    enc(x)
    assert calls == [1]


@needs_kernel
def test_fused_and_torch_agree_on_a_trained_field():
    """Fit a field to a red cube's ground-truth renders for a few steps, then render with both paths."""
    from dreamlmc.cameras import CameraConfig, CameraSampler
    from dreamlmc.renderers.renderer import Renderer, RendererConfig
    from dreamlmc.shapes.world import COLOURS
    from dreamlmc.shapes.render import render_shapes

    torch.manual_seed(0)
    ren = Renderer(RendererConfig(num_samples=32))
    opt = torch.optim.Adam(ren.parameters(), lr=1e-2, eps=1e-15)
    sampler = CameraSampler(CameraConfig(), 24, 24, seed=0)
    for step in range(40):
        ren.update_occupancy(step)
        cams = sampler.sample(1)
        target = render_shapes(["cube"], torch.tensor([COLOURS["red"]]), cams, mode="albedo")["rgb"]
        loss = ((ren(cams, "albedo")["rgb"] - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    cams = sampler.sample(1)
    outs = {}
    for impl in ("auto", "torch"):
        ren.field.encoding.cfg = replace(ren.field.encoding.cfg, implementation=impl)
        out = ren(cams, "lambertian", torch.Generator().manual_seed(5))
        grads = torch.autograd.grad(out["rgb"].square().sum(), list(ren.field.encoding.levels))
        outs[impl] = (out["rgb"].detach(), grads)
    torch.testing.assert_close(outs["auto"][0], outs["torch"][0], rtol=1e-4, atol=1e-4)
    for a, b in zip(outs["auto"][1], outs["torch"][1]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_build_failure_warns_once_and_falls_back(monkeypatch):
    import torch.utils.cpp_extension as ext

    def broken_load(*a, **k):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(ext, "load", broken_load)
    cpu_kernels.reset_for_tests(None)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert cpu_kernels.hash_kernel() is None
            assert cpu_kernels.hash_kernel() is None  # not retried, not warned again
        messages = [str(w.message) for w in caught if "fused CPU hash encoding" in str(w.message)]
        assert len(messages) == 1 and "Ninja is required" in messages[0] and "\n" not in messages[0]
        enc = _encoding(HashGridConfig())
        x = torch.rand(50, 3)
        torch.testing.assert_close(enc(x), enc.encode(x))  # the pure-PyTorch path serves
    finally:
        cpu_kernels.reset_for_tests(None)


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("DREAMLMC_FUSED", "0")
    cpu_kernels.reset_for_tests(None)
    try:
        assert cpu_kernels.hash_kernel() is None
    finally:
        cpu_kernels.reset_for_tests(None)


@needs_kernel
def test_a_stale_build_lock_of_a_killed_process_does_not_hang_the_next_load(tmp_path):
    """torch waits without a time limit while its `lock` file exists; one left by a process killed mid-load (as a
    SIGKILLed training run leaves it) once hung every later run. The next load clears it and goes on."""
    import subprocess
    import sys
    from pathlib import Path

    from torch.utils.cpp_extension import _get_build_directory

    name = f"dreamlmc_hash_encoding_cpu_{cpu_kernels.isa_flags()[0]}"
    stale = Path(_get_build_directory(name, verbose=False)) / "lock"
    stale.write_text("")
    try:
        proc = subprocess.run([sys.executable, "-c", "from dreamlmc.renderers.cpu_kernels import hash_kernel; "
                               "assert hash_kernel() is not None"], capture_output=True, text=True, timeout=300)
    finally:
        left = stale.exists()
        stale.unlink(missing_ok=True)
    assert proc.returncode == 0, proc.stderr
    assert not left and "stale build lock" in proc.stderr
