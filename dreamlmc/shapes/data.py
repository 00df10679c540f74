"""The built-in prior's data: every (colour, shape) prompt rendered from the trainer's own random cameras, and
ground-truth renders of world prompts (the translation network's sources, the benchmarks' references)."""
from __future__ import annotations

import sys
import time
from typing import Sequence

import numpy as np
import torch

from dreamlmc.cameras import CameraConfig, CameraSampler
from dreamlmc.errors import DreamlmcError
from dreamlmc.shapes.render import render_shapes
from dreamlmc.shapes.world import AMBIENT, COLOURS, DIFFUSE, SHAPES, parse_prompt


def make_dataset(per_prompt: int, resolution: int, seed: int, chunk: int = 192, progress: bool = True) -> dict:
    """Returns uint8 images (N, R, R, 3) plus colour/shape indices and camera angles, N = 48 * per_prompt."""
    cams = CameraSampler(CameraConfig(stratified=False), resolution, resolution, seed=seed)
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
        out = render_shapes(shapes, albedo, cam, ambient=AMBIENT, diffuse=DIFFUSE)
        images[idx] = (out["rgb"].permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
        elevation[idx], azimuth[idx] = cam.elevation.numpy(), cam.azimuth.numpy()
        if progress:
            print(f"\r{idx.stop}/{n} images, {time.time() - t0:.0f} s", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    return {"images": images, "colour": ci.astype(np.int64), "shape": si.astype(np.int64),
            "elevation": elevation, "azimuth": azimuth, "resolution": np.int64(resolution), "seed": np.int64(seed)}


def ground_truth_renders(prompts: Sequence[str], per_prompt: int, size: int, seed: int) -> torch.Tensor:
    """Ground-truth renders of built-in world prompts from random training cameras -> (N, 3, size, size)."""
    shapes, albedo = [], []
    for p in prompts:
        parsed = parse_prompt(p)
        if parsed["colour"] is None or parsed["shape"] is None:
            raise DreamlmcError(f"source prompt {p!r} must name a colour and a shape, e.g. 'a blue cube'")
        shapes += [parsed["shape"]] * per_prompt
        albedo += [COLOURS[parsed["colour"]]] * per_prompt
    cams = CameraSampler(CameraConfig(stratified=False), size, size, seed=seed).sample(len(shapes))
    return render_shapes(shapes, torch.tensor(albedo, dtype=torch.float32), cams, ambient=AMBIENT,
                         diffuse=DIFFUSE)["rgb"]
