"""Generate the built-in prior's data set: every (colour, shape) prompt rendered from random training cameras.

Reproducible from --seed: the cameras come from dreamlmc's CameraSampler with that seed, so the data set's view
distribution is exactly the trainer's. Images are lambertian-shaded with a light near the camera on white, or
with --white-fraction < 1 that share on white and the rest on random solid greys (`background: grey`); with
--grey-colours the objects of those colours always on such greys.

    python tools/make_shapes_data.py --out ~/.cache/dreamlmc/shapes32.npz --per-prompt 384 --resolution 32
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from dreamlmc.shapes.data import make_dataset


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path.home() / ".cache/dreamlmc/shapes32.npz")
    ap.add_argument("--per-prompt", type=int, default=384)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--white-fraction", type=float, default=1.0,
                    help="share of images on white; the rest on random solid greys (default 1: all white)")
    ap.add_argument("--grey-range", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                    help="the greys of the non-white backgrounds (default: world.GREY_RANGE, 0.35-0.75)")
    ap.add_argument("--grey-colours", nargs="+", default=(), metavar="COLOUR",
                    help="objects of these colours always on a grey from --grey-range, whatever --white-fraction "
                         "says (a colour-keyed ground, e.g. --grey-colours white: white objects on dark greys)")
    ap.add_argument("--radius", type=float, default=None,
                    help="one camera distance for every image (default: the trainer's random range, 2.0-2.6)")
    ap.add_argument("--fovy", type=float, default=None,
                    help="one vertical field of view in degrees for every image (default: random, 45-60)")
    ap.add_argument("--elevation", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                    help="camera elevation range in degrees (default: the trainer's, -10 45); views below the "
                         "object keep their azimuth's label (front/side/back), as DreamFusion's do")
    args = ap.parse_args(argv)
    from dreamlmc.errors import DreamlmcError

    if args.per_prompt < 1:
        raise DreamlmcError(f"--per-prompt must be >= 1, got {args.per_prompt}")
    if args.resolution < 8:
        raise DreamlmcError(f"--resolution must be >= 8, got {args.resolution}")
    if not 0.0 <= args.white_fraction <= 1.0:
        raise DreamlmcError(f"--white-fraction must be in [0, 1], got {args.white_fraction}")
    from dreamlmc.cameras import CameraConfig
    from dreamlmc.config import check_fields
    from dreamlmc.shapes.world import GREY_RANGE

    grey_range = tuple(args.grey_range) if args.grey_range is not None else GREY_RANGE  # make_dataset checks it

    camera = CameraConfig()
    if args.radius is not None:
        camera.radius_range = (args.radius, args.radius)
    if args.fovy is not None:
        camera.fovy_range = (args.fovy, args.fovy)
    if args.elevation is not None:
        camera.elevation_range = tuple(args.elevation)
    check_fields(camera, "camera")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    data = make_dataset(args.per_prompt, args.resolution, args.seed, white_fraction=args.white_fraction,
                        camera=camera, grey_range=grey_range, grey_colours=tuple(args.grey_colours))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **data)
    tmp.replace(args.out)
    print(f"wrote {len(data['images'])} images to {args.out}")
    return 0


if __name__ == "__main__":
    import sys

    sys.path.append(__file__.rsplit("/tools/", 1)[0])
    from tools.benchutil import run_cli

    raise SystemExit(run_cli(main, "make_shapes_data"))
