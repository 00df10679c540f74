"""Renderer speed: a 64x64 training render forward+backward on a warm occupancy grid, and the hash encoding's
throughput, with the fused C++ kernel (the CPU default where it builds), the pure-PyTorch fast path and the naive
level-by-level reference all measured in the same run.

The "typical object" is a red cube: the field is first fitted to ground-truth renders of it (photometric L2, a
few hundred steps), so the occupancy grid and densities look like those of a trained asset.

    python tools/bench_renderer.py [--device cpu|cuda] [--out benchmarks/renderer.json]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import torch

sys.path.append(__file__.rsplit("/tools/", 1)[0])
from tools.benchutil import machine, median_time, run_cli, table, write_json  # noqa: E402

from dreamlmc.cameras import CameraConfig, CameraSampler  # noqa: E402
from dreamlmc.renderers.cpu_kernels import fused_available, hash_kernel  # noqa: E402
from dreamlmc.renderers.renderer import Renderer, RendererConfig  # noqa: E402
from dreamlmc.shapes.world import COLOURS  # noqa: E402
from dreamlmc.shapes.render import render_shapes  # noqa: E402


def fit_typical_object(renderer: Renderer, steps: int, device, seed: int = 0) -> None:
    sampler = CameraSampler(CameraConfig(), 32, 32, seed=seed)
    opt = torch.optim.Adam(renderer.parameters(), lr=1e-2, eps=1e-15)
    albedo = torch.tensor([COLOURS["red"]])
    for step in range(steps):
        renderer.update_occupancy(step)
        cams = sampler.sample(1)
        target = render_shapes(["cube"], albedo, cams, mode="albedo")["rgb"].to(device)
        out = renderer(cams.to(device), "albedo")
        loss = ((out["rgb"] - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    renderer.update_occupancy(0, force=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fit-steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--points", type=int, default=65536)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    sync = dev.type == "cuda"
    torch.manual_seed(0)
    ren = Renderer(RendererConfig()).to(dev)
    fit_typical_object(ren, args.fit_steps, dev)
    sampler = CameraSampler(CameraConfig(), 64, 64, seed=1)
    cams = [sampler.sample(1).to(dev) for _ in range(args.repeats + 2)]
    rows = []
    enc = ren.field.encoding
    impls = [("fused", "auto")] if (dev.type == "cpu" and fused_available()) else []
    impls.append(("torch", "torch"))
    for impl, key in impls:
        enc.cfg = replace(enc.cfg, implementation=key)
        for mode in ("albedo", "lambertian"):
            it = iter(cams * 2)
            points = []

            def step():
                out = ren(next(it), mode)
                (out["rgb"].mean() + 0.01 * out["orientation"]).backward()
                points.append(float(out["points"]))

            t = median_time(step, args.repeats, sync=sync)
            rows.append({"what": f"64x64 render fwd+bwd ({mode}), {impl} encoding", "ms": 1000 * t,
                         "points_per_render": sum(points) / len(points)})
    x = torch.rand(args.points, 3, device=dev)
    res = {}
    paths = [("reference", enc.reference_encode), ("torch fast path", enc.encode)]
    if impls[0][0] == "fused":
        paths.insert(0, ("fused", lambda p: enc.encode_fused(p, hash_kernel())))
    for name, fn in paths:
        f = median_time(lambda: fn(x), 5, sync=sync)
        fb = median_time(lambda: fn(x).sum().backward(), 5, sync=sync)
        res[name] = {"fwd_s": f, "fwd_bwd_s": fb}
        rows.append({"what": f"hash encoding {name}: fwd", "ms": 1000 * f, "Mpoints_per_s": args.points / f / 1e6})
        rows.append({"what": f"hash encoding {name}: fwd+bwd", "ms": 1000 * fb,
                     "Mpoints_per_s": args.points / fb / 1e6})
    ratio = {}
    for name in res:
        if name == "reference":
            continue
        ratio[name] = {"fwd_over_reference": res["reference"]["fwd_s"] / res[name]["fwd_s"],
                       "fwd_bwd_over_reference": res["reference"]["fwd_bwd_s"] / res[name]["fwd_bwd_s"]}
        rows.append({"what": f"{name}: speed-up over the naive reference (fwd / fwd+bwd)",
                     "ratio": f"{ratio[name]['fwd_over_reference']:.1f}x / {ratio[name]['fwd_bwd_over_reference']:.1f}x"})
    if "fused" in res:
        ratio["fused_over_torch"] = {"fwd": res["torch fast path"]["fwd_s"] / res["fused"]["fwd_s"],
                                     "fwd_bwd": res["torch fast path"]["fwd_bwd_s"] / res["fused"]["fwd_bwd_s"]}
        rows.append({"what": "fused: speed-up over the torch fast path (fwd / fwd+bwd)",
                     "ratio": f"{ratio['fused_over_torch']['fwd']:.1f}x / {ratio['fused_over_torch']['fwd_bwd']:.1f}x"})
    # compositing: dreamlmc's pure-PyTorch weights against nerfacc's batched-layout volume rendering, where installed
    # (nerfacc is not a dependency: this row is the measurement behind that choice)
    try:
        import nerfacc
    except Exception:  # not installed, or broken: nothing to compare
        nerfacc = None
    if nerfacc is not None:
        from dreamlmc.renderers.raymarch import composite_weights

        R, S = 1024, ren.cfg.num_samples  # one 32x32 training render
        sig = (torch.rand(R, S, device=dev) * 20).requires_grad_()
        edges = torch.linspace(0, 2, S + 1, device=dev).expand(R, S + 1)
        t0s, t1s = edges[:, :-1].contiguous(), edges[:, 1:].contiguous()
        ours = median_time(lambda: composite_weights(sig, t1s - t0s)[0].sum().backward(), 50, sync=sync)
        theirs = median_time(lambda: nerfacc.render_weight_from_density(t0s, t1s, sig)[0].sum().backward(), 50,
                             sync=sync)
        rows.append({"what": f"compositing 32x32 x {S} samples fwd+bwd: dreamlmc", "ms": 1000 * ours})
        rows.append({"what": f"compositing 32x32 x {S} samples fwd+bwd: nerfacc {nerfacc.__version__}",
                     "ms": 1000 * theirs})
    info = machine()
    print(f"machine: {info}")
    print(f"occupancy after fitting a red cube: {ren.occupancy.occupancy_fraction():.3f} of the grid")
    print(table(rows, ["what", "ms", "points_per_render", "Mpoints_per_s", "ratio"]))
    path = write_json(f"renderer_{dev.type}", {"machine": info, "rows": rows, "ratio": ratio,
                                              "occupancy_fraction": ren.occupancy.occupancy_fraction(),
                                              "config": "RendererConfig() defaults"}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, "bench_renderer"))
