"""The built-in prior's data: every (colour, shape) prompt rendered from the trainer's own random cameras, and
ground-truth renders of world prompts (the translation network's sources, the benchmarks' references)."""
from __future__ import annotations

import dataclasses
import sys
import time
from typing import Sequence

import numpy as np
import torch

from dreamlmc.cameras import CameraConfig, CameraSampler
from dreamlmc.errors import DreamlmcError
from dreamlmc.shapes.render import render_shapes
from dreamlmc.shapes.world import AMBIENT, COLOURS, DIFFUSE, GREY_RANGE, SHAPES, parse_prompt


def background_colours(n: int, white_fraction: float, seed: int, grey_range=GREY_RANGE) -> np.ndarray:
    """(n, 3) solid background colours: white with probability white_fraction, else a uniform grey in
    grey_range (default world.GREY_RANGE, what the renderer's `background: grey` draws), from their own seeded
    stream."""
    rng = np.random.default_rng([seed, 1_000_003])
    lo, hi = grey_range
    colours = np.repeat(lo + (hi - lo) * rng.random((n, 1)), 3, axis=1).astype(np.float32)
    colours[rng.random(n) < white_fraction] = 1.0
    return colours


def make_dataset(per_prompt: int, resolution: int, seed: int, chunk: int = 192, progress: bool = True,
                 white_fraction: float = 1.0, camera: CameraConfig = None, grey_range=GREY_RANGE,
                 grey_colours: Sequence[str] = ()) -> dict:
    """Returns uint8 images (N, R, R, 3) plus colour/shape indices, camera angles and background colours,
    N = 48 * per_prompt. white_fraction < 1: that share of images on white, the rest on random solid greys
    drawn uniformly from grey_range. grey_colours: objects of these colours always lie on such a grey, whatever
    white_fraction says (a colour-keyed ground: the prompt's colour word alone decides the ground, so no prompt
    of the world has two grounds for classifier-free guidance to pull apart; README row 137).
    camera: the cameras' ranges (default: CameraConfig's, the trainer's); azimuths are always drawn unstratified."""
    if not 0.0 <= white_fraction <= 1.0:
        raise DreamlmcError(f"white_fraction must be in [0, 1], got {white_fraction}")
    if not 0.0 <= grey_range[0] <= grey_range[1] <= 1.0:
        raise DreamlmcError(f"grey_range must be LO <= HI in [0, 1], got {tuple(grey_range)}")
    colour_names = list(COLOURS)
    unknown = [c for c in grey_colours if c not in COLOURS]
    if unknown:
        raise DreamlmcError(f"grey_colours: unknown colour(s) {unknown}; the world's are {colour_names}")
    camera = dataclasses.replace(camera or CameraConfig(), stratified=False)
    cams = CameraSampler(camera, resolution, resolution, seed=seed)
    pairs = [(c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES))]
    ci = np.repeat([p[0] for p in pairs], per_prompt)
    si = np.repeat([p[1] for p in pairs], per_prompt)
    n = len(ci)
    images = np.zeros((n, resolution, resolution, 3), np.uint8)
    backgrounds = background_colours(n, white_fraction, seed, grey_range)
    if grey_colours:  # the same stream's greys, so the other colours' images are those of grey_colours=()
        keyed = np.isin(ci, [colour_names.index(c) for c in grey_colours])
        backgrounds[keyed] = background_colours(n, 0.0, seed, grey_range)[keyed]
    elevation, azimuth = np.zeros(n, np.float32), np.zeros(n, np.float32)
    t0 = time.time()
    for start in range(0, n, chunk):
        idx = slice(start, min(n, start + chunk))
        b = idx.stop - idx.start
        cam = cams.sample(b)
        shapes = [SHAPES[k] for k in si[idx]]
        albedo = torch.tensor([COLOURS[colour_names[k]] for k in ci[idx]], dtype=torch.float32)
        out = render_shapes(shapes, albedo, cam, ambient=AMBIENT, diffuse=DIFFUSE,
                            background=torch.from_numpy(backgrounds[idx]))
        images[idx] = (out["rgb"].permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
        elevation[idx], azimuth[idx] = cam.elevation.numpy(), cam.azimuth.numpy()
        if progress:
            print(f"\r{idx.stop}/{n} images, {time.time() - t0:.0f} s", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    return {"images": images, "colour": ci.astype(np.int64), "shape": si.astype(np.int64),
            "elevation": elevation, "azimuth": azimuth, "background": backgrounds, "resolution": np.int64(resolution),
            "seed": np.int64(seed), "white_fraction": np.float32(white_fraction),
            "grey_range": np.float32(grey_range), "grey_colours": np.array(sorted(grey_colours), dtype=str),
            "radius_range": np.float32(camera.radius_range), "fovy_range": np.float32(camera.fovy_range),
            "elevation_range": np.float32(camera.elevation_range)}


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
