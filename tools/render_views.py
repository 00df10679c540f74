"""Render finished runs from random training cameras into a folder of PNGs: images from the NeRF's own
distribution, e.g. to train the corrective k_psi on them (`dreamlmc corrective train --images DIR`) instead of on
the prior's samples (issue 14).

    python tools/render_views.py RUN_DIR [RUN_DIR ...] --out DIR [--views 8] [--mode lambertian]

Each run is rendered at its training resolution with its training camera distribution (cameras drawn from a seed
of their own, so they are not the run's training cameras) over a white background. DIR/prompts.json records each
image's prompt (the run's, with the camera's view word); the k_psi training reads it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dreamlmc.errors import DreamlmcError  # noqa: E402
from dreamlmc.guidance.corrective_train import PROMPTS_FILE  # noqa: E402
from dreamlmc.io import atomic_write_text  # noqa: E402


def render_run(run: Path, views: int, mode: str, seed: int, backend=None):
    """-> (views, H, W, 3) uint8 renders of a run's final checkpoint, their prompts (the run's prompt with each
    camera's view word, as in training), and the backend (to reuse for the next run)."""
    from dreamlmc.cameras import CameraSampler
    from dreamlmc.runs import load_trainer

    trainer = load_trainer(run, backend=backend)
    trainer.renderer.eval()
    sampler = CameraSampler(trainer.cfg.camera, trainer.resolution, trainer.resolution, seed=seed)
    cams = sampler.sample(views)
    with torch.no_grad():
        out = trainer.renderer(cams, mode, torch.Generator().manual_seed(seed), perturb=False)
    rgb = out["rgb"].clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return (rgb * 255 + 0.5).astype(np.uint8), trainer.prompts_for(cams.views), trainer.backend


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--mode", default="lambertian", choices=("albedo", "lambertian", "textureless", "normal"))
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args(argv)
    import imageio.v3 as iio

    if args.views < 1:
        raise DreamlmcError(f"--views must be >= 1, got {args.views}")
    args.out.mkdir(parents=True, exist_ok=True)
    table_path = args.out / PROMPTS_FILE
    try:
        table = json.loads(table_path.read_text()) if table_path.is_file() else {}
    except ValueError:
        raise DreamlmcError(f"{table_path} is not readable JSON; move it away first") from None
    backend, written = None, 0
    try:
        for i, run in enumerate(args.runs):
            imgs, prompts, backend = render_run(run, args.views, args.mode, args.seed + i, backend)
            for j, (img, prompt) in enumerate(zip(imgs, prompts)):
                name = f"{run.name}_{j:02d}.png"
                iio.imwrite(args.out / name, img)
                table[name] = prompt
                written += 1
    finally:  # the images written so far keep their prompts, also when a later run fails
        atomic_write_text(table_path, json.dumps(table, indent=1, sort_keys=True))
    print(f"{args.out}: {written} images from {len(args.runs)} runs")
    return 0


if __name__ == "__main__":
    from tools.benchutil import run_cli

    sys.exit(run_cli(main, "render_views"))
