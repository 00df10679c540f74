"""One short script for a CUDA machine: the CUDA paths against the CPU reference, then GPU timings.

Checks (each prints PASS/FAIL with the measured error):
  - optional accelerators: is tinycudann / nerfacc importable (they are never required);
  - hash encoding on CUDA (pure PyTorch) == CPU, forward and table gradients;
  - renderer on CUDA == CPU for the same weights and cameras (rgb, opacity, depth);
  - SDS / LMC-SDS gradient on the built-in prior, CUDA fp32 == CPU fp32;
  - tiny Stable Diffusion and DeepFloyd IF backends in fp16 on CUDA (their default there) vs fp32 on the CPU;
  - a short `dreamlmc train --device cuda` end to end.
Writes device_check.json (and the logs of the benchmarks it runs) to $OUT or --out.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))
sys.path.append(str(ROOT / "tests"))

results = {}


def check(name, ok, **info):
    results[name] = dict(ok=bool(ok), **info)
    print(f"{'PASS' if ok else 'FAIL'} {name} {json.dumps(info)}", flush=True)


def rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def main():
    out = Path(os.environ.get("OUT", "device_check_out"))
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")  # "cpu": a dry run of this script
    results["env"] = {"torch": torch.__version__,
                      "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}
    for mod in ("tinycudann", "nerfacc"):
        try:
            __import__(mod)
            results["env"][mod] = "importable"
        except Exception as e:
            results["env"][mod] = f"not importable ({type(e).__name__})"
    print(results["env"], flush=True)

    from dreamlmc.renderers.hash_grid import HashEncoding, HashGridConfig

    torch.manual_seed(0)
    enc = HashEncoding(HashGridConfig())
    with torch.no_grad():
        for p in enc.levels:
            p.normal_(0, 0.1)
    x = torch.rand(100_000, 3)
    w = torch.randn(100_000, enc.output_dim)
    y_cpu = enc.encode(x)
    g_cpu = torch.autograd.grad((y_cpu * w).sum(), list(enc.levels))
    enc_cuda = HashEncoding(HashGridConfig()).to(dev)
    enc_cuda.load_state_dict(enc.state_dict())
    y_gpu = enc_cuda.encode(x.to(dev))
    g_gpu = torch.autograd.grad((y_gpu * w.to(dev)).sum(), list(enc_cuda.levels))
    check("hash encoding cuda == cpu (fwd)", rel(y_gpu, y_cpu) < 1e-5, rel_err=rel(y_gpu, y_cpu))
    errs = [rel(a, b) for a, b in zip(g_gpu, g_cpu)]
    check("hash encoding cuda == cpu (grads)", max(errs) < 1e-4, max_rel_err=max(errs))

    from dreamlmc.cameras import CameraConfig, CameraSampler
    from dreamlmc.renderers.renderer import Renderer, RendererConfig

    torch.manual_seed(0)
    ren = Renderer(RendererConfig())
    ren.update_occupancy(0, force=True)
    ren_gpu = Renderer(RendererConfig()).to(dev)
    ren_gpu.load_state_dict(ren.state_dict())
    cams = CameraSampler(CameraConfig(), 64, 64, seed=0).sample(2)
    with torch.no_grad():
        a = ren(cams, ("lambertian", "textureless"), perturb=False)
        b = ren_gpu(cams.to(dev), ("lambertian", "textureless"), perturb=False)
    errs = {k: rel(b[k], a[k]) for k in ("rgb", "rgb_textureless", "opacity", "depth")}
    check("renderer cuda == cpu", max(errs.values()) < 1e-4, **errs)

    from dreamlmc.guidance.backends import load_backend
    from dreamlmc.guidance.sds import GuidanceConfig, ScoreDistillation

    img = torch.rand(2, 3, 32, 32)
    t = torch.tensor([300, 800])
    prompts = ["a red cube, front view", "a red cube, side view"]
    for kind, tf32 in (("sds", False), ("lmc-sds", False), ("sds", True)):
        # strict fp32 must match the CPU; TF32 convolutions (cuDNN's default on Ampere+) are reported separately
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        grads = {}
        for d in ("cpu", dev.type):
            be = load_backend("builtin", device=d)
            g = ScoreDistillation(GuidanceConfig(kind=kind, guidance_scale=20.0), be, seed=0)
            im = img.detach().clone().to(d).requires_grad_(True)
            eps = g.noise.sample(2)
            g(im, prompts, t=t, eps=eps)["loss"].backward()
            grads[d] = im.grad
        e = rel(grads[dev.type], grads["cpu"])
        check(f"{kind} gradient on the built-in prior, cuda {'tf32' if tf32 else 'strict fp32'} vs cpu",
              e < (1e-2 if tf32 else 5e-4), rel_err=e)
    torch.backends.cudnn.allow_tf32 = True

    from tiny_models import make_tiny_if, make_tiny_sd

    with tempfile.TemporaryDirectory() as d:
        for name, make in (("stable diffusion", make_tiny_sd), ("deepfloyd if", make_tiny_if)):
            folder = make(Path(d) / name.replace(" ", "-"))
            grads = {}
            for dv in ("cpu", dev.type):
                be = load_backend(str(folder), device=dv)  # fp16 on CUDA by default
                g = ScoreDistillation(GuidanceConfig(kind="sds", guidance_scale=7.5, fixed_eps=True), be, seed=0)
                im = img.detach().clone().to(dv).requires_grad_(True)
                g(im, prompts, t=t, eps=g.noise.sample(2))["loss"].backward()
                grads[dv] = (im.grad, str(be.dtype))
            e = rel(grads[dev.type][0], grads["cpu"][0])
            check(f"{name} backend fp16 cuda vs fp32 cpu", e < 2e-2 and torch.isfinite(grads[dev.type][0]).all(),
                  rel_err=e, cuda_dtype=grads[dev.type][1])

    with tempfile.TemporaryDirectory() as d:
        t0 = time.time()
        r = subprocess.run([sys.executable, "-m", "dreamlmc.cli", "train", "--prompt", "a red cube", "--out",
                            f"{d}/run", "--device", dev.type, "--quiet"], capture_output=True, text=True)
        wall = time.time() - t0
        check("dreamlmc train --device cuda (default steps)", r.returncode == 0 and Path(f"{d}/run/model.glb").exists(),
              wall_s=wall, stderr_tail=r.stderr[-300:])
    (out / "device_check.json").write_text(json.dumps(results, indent=2))
    fails = [k for k, v in results.items() if isinstance(v, dict) and v.get("ok") is False]
    print(f"{len(fails)} failed: {fails}" if fails else "all device checks passed", flush=True)
    return 1 if fails else 0


if __name__ == "__main__":
    raise SystemExit(main())
