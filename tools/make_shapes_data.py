"""Generate the built-in prior's data set: every (colour, shape) prompt rendered from random training cameras.

Reproducible from --seed: the cameras come from dreamlmc's CameraSampler with that seed, so the data set's view
distribution is exactly the trainer's. Images are lambertian-shaded with a light near the camera on white.

    python tools/make_shapes_data.py --out ~/.cache/dreamlmc/shapes32.npz --per-prompt 384 --resolution 32
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dreamlmc.cameras import CameraConfig, CameraSampler
from dreamlmc.renderers.shading import ShadingConfig
from dreamlmc.world import COLOURS, SHAPES
from dreamlmc.world_render import render_shapes


def make_dataset(per_prompt: int, resolution: int, seed: int, chunk: int = 192, progress: bool = True) -> dict:
    """Returns uint8 images (N, R, R, 3) plus colour/shape indices and camera angles, N = 48 * per_prompt."""
    cams = CameraSampler(CameraConfig(stratified=False), resolution, resolution, seed=seed)
    shading = ShadingConfig()
    colour_names = list(COLOURS)
    pairs = [(c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES))]
    ci = np.repeat([p[0] for p in pairs], per_prompt)
    si = np.repeat([p[1] for p in pairs], per_prompt)
    n = len(ci)
    images = np.zeros((n, resolution, resolution, 3), np.uint8)
    elevation, azimuth = np.zeros(n, np.float32), np.zeros(n, np.float32)
    t0 = time.time()
    for start in range(0, n, chunk):
        idx = slice(start, min(n, start + chunk))
        b = idx.stop - idx.start
        cam = cams.sample(b)
        shapes = [SHAPES[k] for k in si[idx]]
        albedo = torch.tensor([COLOURS[colour_names[k]] for k in ci[idx]], dtype=torch.float32)
        out = render_shapes(shapes, albedo, cam, ambient=shading.ambient, diffuse=shading.diffuse)
        images[idx] = (out["rgb"].permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
        elevation[idx], azimuth[idx] = cam.elevation.numpy(), cam.azimuth.numpy()
        if progress:
            print(f"\r{idx.stop}/{n} images, {time.time() - t0:.0f} s", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    return {"images": images, "colour": ci.astype(np.int64), "shape": si.astype(np.int64),
            "elevation": elevation, "azimuth": azimuth, "resolution": np.int64(resolution), "seed": np.int64(seed)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path.home() / ".cache/dreamlmc/shapes32.npz")
    ap.add_argument("--per-prompt", type=int, default=384)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    data = make_dataset(args.per_prompt, args.resolution, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **data)
    tmp.replace(args.out)
    print(f"wrote {len(data['images'])} images to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
