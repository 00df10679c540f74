"""What the built-in prior makes of the images the trainer shows it: its denoising error on ground-truth renders of
the world under each shading mode, elevation band and background, against the images it was trained on
(lambertian, elevation -10..45 degrees, white background).

The prior's ε-prediction error E_t,ε ||ε_φ(z_t; y, t) − ε||² is (up to weights) its negative evidence bound: an
image the prior finds unlikely under its prompt has a larger error, and score distillation pulls such a render
towards something else. Perfect renders are used here (analytic ground truth), so any excess is the render
style's, not the NeRF's. Same prompts, cameras, timesteps and noise for every condition.

    python tools/bench_prior_view.py [--model W] [--per-prompt 4] [--out benchmarks/prior_view.json] [--figure docs/prior_view.png]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import numpy as np
import torch

sys.path.append(__file__.rsplit("/tools/", 1)[0])
from tools.benchutil import machine, run_cli, table, write_json  # noqa: E402

from dreamlmc.cameras import CameraConfig, CameraSampler, view_label  # noqa: E402
from dreamlmc.guidance.backends.builtin import BuiltinBackend  # noqa: E402
from dreamlmc.renderers.shading import ShadingConfig  # noqa: E402
from dreamlmc.shapes.world import COLOURS, SHAPES, prompt_for  # noqa: E402
from dreamlmc.shapes.render import render_shapes  # noqa: E402

CONDITIONS = [
    # name, shading mode, elevation range, background
    ("lambertian, el -10..45, white (training data)", "lambertian", (-10.0, 45.0), "white"),
    ("albedo (flat colour)", "albedo", (-10.0, 45.0), "white"),
    ("textureless (grey, lambertian)", "textureless", (-10.0, 45.0), "white"),
    ("lambertian, el -45..-10 (from below)", "lambertian", (-45.0, -10.0), "white"),
    ("lambertian, el 45..60", "lambertian", (45.0, 60.0), "white"),
    ("lambertian, el 60..89 (overhead label)", "lambertian", (60.0, 89.0), "white"),
    ("lambertian, random solid background", "lambertian", (-10.0, 45.0), "random"),
]


def renders(mode, elevation, background, per_prompt, resolution, seed):
    sampler = CameraSampler(replace(CameraConfig(), elevation_range=elevation, stratified=False), resolution,
                            resolution, seed=seed)
    sh = ShadingConfig()
    g = torch.Generator().manual_seed(seed + 1)
    images, prompts = [], []
    for colour in COLOURS:
        for shape in SHAPES:
            cams = sampler.sample(per_prompt)
            albedo = torch.tensor([COLOURS[colour]] * per_prompt)
            gt_mode = mode
            if mode == "textureless":
                albedo, gt_mode = torch.full((per_prompt, 3), sh.textureless_albedo), "lambertian"
            for i in range(per_prompt):
                bg = (1.0, 1.0, 1.0) if background == "white" else tuple(torch.rand(3, generator=g).tolist())
                one = cams.to("cpu")
                sub = type(one)(*(getattr(one, k)[i:i + 1] for k in ("rays_o", "rays_d", "c2w", "elevation",
                                                                   "azimuth", "radius", "fovy", "light_pos")),
                                views=one.views[i:i + 1])
                img = render_shapes([shape], albedo[i:i + 1], sub, ambient=sh.ambient, diffuse=sh.diffuse,
                                    mode=gt_mode, background=bg)["rgb"]
                images.append(img)
                prompts.append(f"{prompt_for(colour, shape)}, "
                               f"{view_label(float(sub.elevation[0]), float(sub.azimuth[0]))} view")
    return torch.cat(images), prompts


@torch.no_grad()
def denoising_error(be: BuiltinBackend, images, prompts, t_fracs, seed, batch=96):
    x = be.encode_images(images)
    T = be.num_train_timesteps
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(x.shape, generator=g)
    errs = np.zeros((len(t_fracs), len(x)))
    cond = be.encode_prompts(prompts)
    for k, tf in enumerate(t_fracs):
        t = torch.full((len(x),), int(tf * T), dtype=torch.long)
        ac = be.alphas_cumprod[t].view(-1, 1, 1, 1)
        z = ac.sqrt() * x + (1 - ac).sqrt() * eps
        for i in range(0, len(x), batch):
            e_c, _ = be.predict_noise(z[i:i + batch], t[i:i + batch], cond[i:i + batch], None)
            errs[k, i:i + batch] = ((e_c - eps[i:i + batch]) ** 2).mean(dim=(1, 2, 3)).numpy()
    return errs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-prompt", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--figure", default=None, help="a PNG with example renders per condition (rows)")
    ap.add_argument("--model", default=None, help="prior weights (default: the shipped built-in prior)")
    args = ap.parse_args(argv)
    be = BuiltinBackend(args.model)
    R = be.image_resolution
    t_fracs = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7]
    rows, examples = [], []
    base = None
    for name, mode, el, bg in CONDITIONS:
        images, prompts = renders(mode, el, bg, args.per_prompt, R, args.seed)
        errs = denoising_error(be, images, prompts, t_fracs, args.seed + 7)
        per_image = errs.mean(0)
        mean = float(per_image.mean())
        base = base if base is not None else per_image
        # paired over the same prompts, cameras, timesteps and noise: mean ratio and its standard error
        ratio = per_image / base
        row = {"condition": name, "denoising_mse": mean, "ratio_to_training_data": float(ratio.mean()),
               "ratio_se": float(ratio.std(ddof=1) / np.sqrt(len(ratio))), "images": len(per_image)}
        for k, tf in enumerate(t_fracs):
            row[f"t={tf:g}"] = float(errs[k].mean())
        rows.append(row)
        examples.append(torch.cat(list(images[:: max(1, len(images) // 12)][:12]), -1))
        print(f"{name}: {mean:.4f}", flush=True)
    cols = ["condition", "denoising_mse", "ratio_to_training_data", "ratio_se"] + [f"t={tf:g}" for tf in t_fracs]
    print(table(rows, cols))
    path = write_json("prior_view", {"machine": machine(), "rows": rows, "per_prompt": args.per_prompt,
                                     "weights": str(be.weights), "fingerprint": be.fingerprint,
                                     "t_fracs": t_fracs}, args.out)
    print(f"wrote {path}")
    if args.figure:
        from dreamlmc.media import save_png

        grid = torch.cat(examples, -2)
        grid = torch.nn.functional.interpolate(grid[None], scale_factor=3, mode="nearest")[0]
        save_png(grid, args.figure)
        print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, "bench_prior_view"))
