"""Renderer speed: a 64x64 training render forward+backward on a warm occupancy grid, and the hash encoding's
throughput against the naive level-by-level reference, in the same run.

The "typical object" is a red cube: the field is first fitted to ground-truth renders of it (photometric L2, a
few hundred steps), so the occupancy grid and densities look like those of a trained asset.

    python tools/bench_renderer.py [--device cpu|cuda] [--out benchmarks/renderer.json]
"""
from __future__ import annotations

import argparse
import sys

import torch

sys.path.append(__file__.rsplit("/tools/", 1)[0])
from tools.benchutil import machine, median_time, table, write_json  # noqa: E402

from dreamlmc.cameras import CameraConfig, CameraSampler  # noqa: E402
from dreamlmc.renderers.renderer import Renderer, RendererConfig  # noqa: E402
from dreamlmc.world import COLOURS  # noqa: E402
from dreamlmc.world_render import render_shapes  # noqa: E402


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
    for mode in ("albedo", "lambertian"):
        it = iter(cams * 2)
        points = []

        def step():
            out = ren(next(it), mode)
            (out["rgb"].mean() + 0.01 * out["orientation"]).backward()
            points.append(float(out["points"]))

        t = median_time(step, args.repeats, sync=sync)
        rows.append({"what": f"64x64 render fwd+bwd ({mode})", "ms": 1000 * t,
                     "points_per_render": sum(points) / len(points)})
    enc = ren.field.encoding
    x = torch.rand(args.points, 3, device=dev)
    res = {}
    for name, fn in (("fast", enc.encode), ("reference", enc.reference_encode)):
        f = median_time(lambda: fn(x), 5, sync=sync)
        fb = median_time(lambda: fn(x).sum().backward(), 5, sync=sync)
        res[name] = {"fwd_s": f, "fwd_bwd_s": fb}
        rows.append({"what": f"hash encoding {name}: fwd", "ms": 1000 * f, "Mpoints_per_s": args.points / f / 1e6})
        rows.append({"what": f"hash encoding {name}: fwd+bwd", "ms": 1000 * fb,
                     "Mpoints_per_s": args.points / fb / 1e6})
    ratio = {"fwd": res["reference"]["fwd_s"] / res["fast"]["fwd_s"],
             "fwd_bwd": res["reference"]["fwd_bwd_s"] / res["fast"]["fwd_bwd_s"]}
    rows.append({"what": "speed-up over the naive reference (fwd / fwd+bwd)",
                 "ms": None, "Mpoints_per_s": None, "ratio": f"{ratio['fwd']:.1f}x / {ratio['fwd_bwd']:.1f}x"})
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
    raise SystemExit(main())
