"""Row 118: is the ground truth a fixed point of the prior's own denoising (SDEdit)? Ground-truth renders of four
prompts from the trainer's cameras (elevation 0-30), noised to t and denoised by 4 DDIM steps at scale s; the
foreground coverage (pixels darker than 0.96 in some channel) of the result against the render's, and the mean
absolute change. Then the same for the default's trained white cube, pyramid and red cube (seed 1, 0, 0) if their
run folders are given. Writes the image beside this script (rows: prompts; blocks: the renders, then t = 0.3 / 0.5 /
0.7 each at s = 1, 3, 7.5, 20).

    python benchmarks/quality/ablation/118_sdedit_fixed_point.py [RUN ...]
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from dreamlmc.cameras import CameraConfig, CameraSampler  # noqa: E402
from dreamlmc.guidance.backends import load_backend  # noqa: E402
from dreamlmc.guidance.diffusion import add_noise, coefficients, ddim_denoise  # noqa: E402
from dreamlmc.media import grid, save_png  # noqa: E402
from dreamlmc.shapes.render import render_shapes  # noqa: E402
from dreamlmc.shapes.world import AMBIENT, COLOURS, DIFFUSE, parse_prompt  # noqa: E402

HERE = Path(__file__).resolve().parent


def sdedit(be, images, texts, t_frac, s, steps, gen):
    x = images * 2 - 1
    B = x.shape[0]
    cond, unc = be.encode_prompts(texts), be.encode_prompts([""] * B)
    t = torch.full((B,), int(t_frac * be.num_train_timesteps))
    a, sg = coefficients(be.alphas_cumprod, t)
    x_t = add_noise(x, a, sg, torch.randn(x.shape, generator=gen))
    with torch.no_grad():
        y = ddim_denoise(lambda x_, t_: be.predict_noise(x_, t_, cond, unc), x_t, t, be.alphas_cumprod, steps, s)
    return ((y + 1) / 2).clamp(0, 1)


def coverage(img):
    return (img.min(1).values < 0.96).float().mean().item()


def main():
    be = load_backend("builtin", device=torch.device("cpu"))
    cams_cfg = CameraConfig(elevation_range=(0.0, 30.0))
    rows = []
    for p in ["a red cube", "a white cube", "an orange pyramid", "a green cylinder"]:
        parts = parse_prompt(p)
        cams = CameraSampler(cams_cfg, 32, 32, seed=3).sample(4)
        x = render_shapes([parts["shape"]] * 4, torch.tensor([COLOURS[parts["colour"]]] * 4), cams, ambient=AMBIENT,
                          diffuse=DIFFUSE)["rgb"]
        texts = [f"{p}, {v} view" for v in cams.views]
        line, msg = [x], f"{p}: coverage / ground truth's, mean |change|:"
        for t in (0.3, 0.5, 0.7):
            for s in (1.0, 3.0, 7.5, 20.0):
                y = sdedit(be, x, texts, t, s, 4, torch.Generator().manual_seed(1))
                msg += f" t={t} s={s}: {coverage(y) / coverage(x):.2f}x {(y - x).abs().mean():.3f};"
                line.append(y)
        print(msg)
        rows.append(torch.cat(line))
    save_png(grid(rows), HERE / "118_sdedit_fixed_point_ground_truth.png")
    if len(sys.argv) > 1:
        from dreamlmc.shapes.metrics import load_run

        rows = []
        for run in sys.argv[1:]:
            tr = load_run(Path(run))
            tr.renderer.eval()
            cams = tr.sampler.sample(4)
            with torch.no_grad():
                x = tr.renderer(cams, "lambertian", perturb=False)["rgb"]
            line = [x] + [sdedit(be, x, tr.prompts_for(cams.views), t, s, 4, torch.Generator().manual_seed(1))
                          for t in (0.3, 0.5, 0.7) for s in (3.0, 7.5)]
            rows.append(torch.cat(line))
        save_png(grid(rows), HERE / "118_sdedit_of_default_runs.png")


if __name__ == "__main__":
    main()
