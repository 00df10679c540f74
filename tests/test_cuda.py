"""The CUDA paths against the CPU reference (were tools/device_check.py). Marked `cuda`: skipped with a reason where
no GPU is present, run by the normal test command on a machine with one."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")]

ROOT = Path(__file__).resolve().parents[1]


def rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def test_hash_encoding_cuda_matches_cpu():
    from dreamlmc.renderers.hash_grid import HashEncoding, HashGridConfig

    cfg = HashGridConfig(implementation="torch")
    torch.manual_seed(0)
    enc = HashEncoding(cfg)
    with torch.no_grad():
        for p in enc.levels:
            p.normal_(0, 0.1)
    x, w = torch.rand(100_000, 3), torch.randn(100_000, enc.output_dim)
    y_cpu = enc.encode(x)
    g_cpu = torch.autograd.grad((y_cpu * w).sum(), list(enc.levels))
    gpu = HashEncoding(cfg).cuda()
    gpu.load_state_dict(enc.state_dict())
    y_gpu = gpu.encode(x.cuda())
    g_gpu = torch.autograd.grad((y_gpu * w.cuda()).sum(), list(gpu.levels))
    assert rel(y_gpu, y_cpu) < 1e-5
    assert max(rel(a, b) for a, b in zip(g_gpu, g_cpu)) < 1e-4


def test_renderer_cuda_matches_cpu():
    from dreamlmc.cameras import CameraConfig, CameraSampler
    from dreamlmc.renderers.renderer import Renderer, RendererConfig

    cfg = RendererConfig()
    cfg.field.hash_grid.implementation = "torch"
    torch.manual_seed(0)
    ren = Renderer(cfg)
    ren.update_occupancy(0, force=True)
    gpu = Renderer(cfg, device="cuda").cuda()
    gpu.load_state_dict(ren.state_dict())
    cams = CameraSampler(CameraConfig(), 64, 64, seed=0).sample(2)
    with torch.no_grad():
        a = ren(cams, ("lambertian", "textureless"), perturb=False)
        b = gpu(cams.to("cuda"), ("lambertian", "textureless"), perturb=False)
    for k in ("rgb", "rgb_textureless", "opacity", "depth"):
        assert rel(b[k], a[k]) < 1e-4, k


@pytest.mark.parametrize("kind", ["sds", "lmc-sds"])
def test_guidance_gradient_cuda_strict_fp32_matches_cpu(kind):
    from dreamlmc.guidance.backends import load_backend
    from dreamlmc.guidance.sds import GuidanceConfig, ScoreDistillation

    img, t = torch.rand(2, 3, 32, 32), torch.tensor([300, 800])
    prompts = ["a red cube, front view", "a red cube, side view"]
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # strict fp32
    try:
        grads = {}
        for d in ("cpu", "cuda"):
            g = ScoreDistillation(GuidanceConfig(kind=kind, guidance_scale=20.0), load_backend("builtin", device=d),
                                  seed=0)
            im = img.clone().to(d).requires_grad_(True)
            g(im, prompts, t=t, eps=g.noise.sample(2))["loss"].backward()
            grads[d] = im.grad
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert rel(grads["cuda"], grads["cpu"]) < 5e-4


@pytest.mark.parametrize("which", ["sd", "if"])
def test_tiny_diffusers_backends_fp16_on_cuda_near_fp32_on_cpu(tmp_path, which):
    from tiny_models import make_tiny_if, make_tiny_sd

    from dreamlmc.guidance.backends import load_backend
    from dreamlmc.guidance.sds import GuidanceConfig, ScoreDistillation

    folder = (make_tiny_sd if which == "sd" else make_tiny_if)(tmp_path / which)
    img, t = torch.rand(2, 3, 32, 32), torch.tensor([300, 800])
    grads = {}
    for d in ("cpu", "cuda"):
        be = load_backend(str(folder), device=d)  # fp16 on CUDA by default
        g = ScoreDistillation(GuidanceConfig(kind="sds", guidance_scale=7.5), be, seed=0)
        im = img.clone().to(d).requires_grad_(True)
        g(im, ["a photo", "a photo"], t=t, eps=g.noise.sample(2))["loss"].backward()
        grads[d] = im.grad
    assert torch.isfinite(grads["cuda"]).all() and rel(grads["cuda"], grads["cpu"]) < 2e-2


def test_train_on_cuda_end_to_end(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dreamlmc.cli", "train", "--prompt", "a red cube", "--out",
                        str(tmp_path / "run"), "--device", "cuda", "--config", str(ROOT / "configs" / "quick.yaml"),
                        "--quiet"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-500:]
    assert (tmp_path / "run" / "model.glb").exists()
