"""README row 83: does guidance rescale (Lin et al. 2024, "Common diffusion noise schedules and sample steps are
flawed", section 3.4) remove the dark mottled crown the built-in prior draws around a white cube at high guidance
scales? DDIM samples (50 steps, the same noise per column) of three prompts, rows per prompt: s = 1; s = 20;
s = 20 rescaled with phi = 0.7; s = 20 with phi = 1.0; s = 12; s = 12 with phi = 0.7. The rescaled guided noise is
phi * e * std(e_c) / std(e) + (1 - phi) * e, std over each sample. Writes 83_cfg_rescale_prior_samples.png beside
this file (about 5 minutes on the 2-core CPU). Run from the repository root.
"""
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dreamlmc.guidance.diffusion import ddim_sample
from dreamlmc.shapes.prior import load_prior, make_scheduler, tokenize

PROMPTS = ["a white cube, front view", "a red cube, front view", "an orange pyramid, side view"]
SETTINGS = [(1.0, 0.0), (20.0, 0.0), (20.0, 0.7), (20.0, 1.0), (12.0, 0.0), (12.0, 0.7)]  # (s, phi)
SAMPLES, STEPS = 6, 50


@torch.no_grad()
def samples(net, prompt: str, s: float, phi: float, steps: int = STEPS) -> torch.Tensor:
    """(SAMPLES, 3, R, R) in [0, 1]; the guided (and rescaled) noise is formed here, so ddim_sample runs at s = 1."""
    R = net.cfg["resolution"]
    x = torch.randn(SAMPLES, 3, R, R, generator=torch.Generator().manual_seed(0))
    hidden = net.encode(torch.cat([tokenize([prompt] * SAMPLES), tokenize([""] * SAMPLES)]))

    def predict(x_t, t):
        e_c, e_u = net.predict(torch.cat([x_t, x_t]), torch.cat([t, t]), hidden).chunk(2)
        e = e_u + s * (e_c - e_u)
        if phi > 0:
            e = phi * e * e_c.std(dim=(1, 2, 3), keepdim=True) / e.std(dim=(1, 2, 3), keepdim=True) + (1 - phi) * e
        return e, e

    x = ddim_sample(predict, x, make_scheduler(net.cfg), steps, 1.0)
    return ((x + 1) / 2).clamp(0, 1)


def main():
    net, _ = load_prior(Path("dreamlmc/assets/builtin_prior.safetensors"))
    net.eval()
    rows = [torch.cat(list(samples(net, p, s, phi)), dim=2) for p in PROMPTS for s, phi in SETTINGS]
    grid = (torch.cat(rows, dim=1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    img = Image.fromarray(grid)
    img.resize((img.width * 3, img.height * 3), Image.NEAREST).save(Path(__file__).with_name(
        "83_cfg_rescale_prior_samples.png"))


if __name__ == "__main__":
    main()
