"""Train k_psi for a prior: regress k_psi(x, t) onto the frozen prior's one-step denoised x_hat.

Clean images x come from the prior's own samples by default (no data set needed) or from an image folder. For
each batch: t ~ U[t_range], ε ~ N(0, I), x_t = α_t x + σ_t ε, x_hat = (x_t − σ_t ε_φ(x_t; y, t)) / α_t with the
same (conditional) prediction the guidance uses; minimise ‖k_psi(x, t) − x_hat‖². Resumable from a checkpoint
beside the output file.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from dreamlmc.config import spec
from dreamlmc.errors import DreamlmcError
from dreamlmc.guidance.backends.base import DiffusionBackend
from dreamlmc.guidance.corrective import Corrective, save_corrective
from dreamlmc.guidance.diffusion import add_noise, coefficients, ddim_sample, denoised


@dataclass
class CorrectiveConfig:
    """Settings of `dreamlmc corrective train` (presets with --config, dotted overrides, flags; the card records
    them)."""

    model: str = spec("builtin", nonempty=True)
    images: Optional[str] = None  # a folder of clean images; default: the prior's own samples
    prompts: Tuple[str, ...] = ()  # prompts to sample; default for the built-in prior: all 48 of its world
    steps: int = spec(1500, ge=0, le=100_000)
    batch_size: int = spec(32, ge=1, le=512)
    lr: float = spec(1e-3, gt=0.0, le=10.0)
    per_prompt: int = spec(8, ge=1, le=1024)  # prior samples per prompt
    seed: int = spec(0, ge=0, le=2**63 - 1)
    t_range: Tuple[float, float] = spec((0.02, 0.98), ge=0.0, le=1.0, ordered=True)
    hidden: int = spec(48, ge=1, le=1024)
    layers: int = spec(4, ge=1, le=32)
    kernel: int = spec(5, ge=1, le=15)
    sample_guidance: float = spec(3.0, ge=0.0, le=1e4)
    sample_steps: int = spec(25, ge=1, le=1000)


def sample_pool(backend: DiffusionBackend, prompts: Sequence[str], per_prompt: int, guidance_scale: float,
                steps: int, seed: int, progress: bool = True) -> Dict:
    """Clean x (N, C, h, w) drawn from the prior with DDIM, and their prompts."""
    from tqdm import tqdm

    g = torch.Generator().manual_seed(seed)
    xs: List[torch.Tensor] = []
    names: List[str] = []
    todo = [p for p in prompts for _ in range(per_prompt)]
    chunk = 16
    for i in tqdm(range(0, len(todo), chunk), desc="sampling the prior", disable=not progress, leave=False):
        ps = todo[i:i + chunk]
        x = torch.randn((len(ps),) + tuple(backend.latent_shape), generator=g).to(backend.device)
        cond, uncond = backend.encode_prompts(ps), backend.encode_prompts(backend.unconditional_prompts(ps))
        x = ddim_sample(lambda x_t, t: backend.predict_noise(x_t, t, cond, uncond), x, backend.scheduler, steps,
                        guidance_scale)
        xs.append(x.float().cpu())
        names += ps
    return {"x": torch.cat(xs), "prompts": names}


PROMPTS_FILE = "prompts.json"  # optional in an image folder: {"file name": "its prompt"}; missing names get ""


def folder_prompts(folder: Path) -> List[str]:
    """The prompt of every image of a folder (in load_image_folder's order) from its prompts.json, "" without one."""
    import json

    from dreamlmc.image import image_files

    files = [f.name for f in image_files(folder)]
    path = Path(folder) / PROMPTS_FILE
    if not path.is_file():
        return [""] * len(files)
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DreamlmcError(f"{path} is not readable JSON ({e})")
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise DreamlmcError(f"{path} must map image file names to prompt strings")
    return [table.get(name, "") for name in files]


def folder_pool(backend: DiffusionBackend, folder: Path) -> Dict:
    """Clean x of every image in a folder, with the prompts of its prompts.json (x_hat is the prompt-conditional
    denoiser's, as in the guidance; "" where an image has none)."""
    from dreamlmc.image import load_image_folder

    imgs = load_image_folder(str(folder), backend.image_resolution)
    prompts = folder_prompts(folder)
    for p in set(prompts) - {""}:
        backend.check_prompt(p)
    with torch.no_grad():
        xs = [backend.encode_images(imgs[i:i + 16].to(backend.device)).float().cpu() for i in range(0, len(imgs), 16)]
    return {"x": torch.cat(xs), "prompts": prompts}


def resume_path(out: Path) -> Path:
    """The resumable training state beside a k_psi file (safetensors: network, optimiser, RNG, the sample pool)."""
    return Path(out).with_suffix(".ckpt.safetensors")


def one_step_denoise(backend: DiffusionBackend, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                     cond: torch.Tensor) -> torch.Tensor:
    """x̂ from the conditional prediction at x_t = α_t x + σ_t ε (what the guidance's x̂ uses)."""
    alpha, sigma = coefficients(backend.alphas_cumprod, t)
    x_t = add_noise(x, alpha, sigma, eps)
    e_c, _ = backend.predict_noise(x_t, t, cond, None)
    return denoised(x_t, e_c, alpha, sigma)


def train_corrective(backend: DiffusionBackend, out: Path, prompts: Sequence[str] = (), images: Optional[Path] = None,
                     steps: int = 2000, batch_size: int = 16, lr: float = 1e-3, t_range=(0.02, 0.98),
                     per_prompt: int = 8, sample_guidance: float = 3.0, sample_steps: int = 25, seed: int = 0,
                     hidden: int = 48, layers: int = 4, kernel: int = 5, checkpoint_every: int = 200,
                     progress: bool = True) -> Dict:
    """Train (or resume) k_psi and write out (.safetensors) + card (.json). Returns the card."""
    from tqdm import tqdm

    out = Path(out)
    ckpt = resume_path(out)
    torch.manual_seed(seed)
    net = Corrective(channels=backend.latent_shape[0], hidden=hidden, layers=layers, kernel=kernel)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed + 1)
    step, losses = 0, []
    if ckpt.exists():
        from dreamlmc.checkpoint import load_state

        state = load_state(ckpt)
        saved = state.get("config")  # older checkpoints did not store it
        if saved is not None and {k: saved[k] for k in ("hidden", "layers", "kernel")} != \
                {"hidden": hidden, "layers": layers, "kernel": kernel}:
            raise DreamlmcError(f"{ckpt} was started with hidden={saved['hidden']} layers={saved['layers']} "
                                f"kernel={saved['kernel']}; resume with those or delete it to start again")
        net.load_state_dict(state["net"])
        from dreamlmc.checkpoint import load_optimizer_state

        load_optimizer_state(opt, state["opt"])
        g.set_state(state["generator"])
        pool = {"x": state["pool_x"], "prompts": list(state["pool_prompts"])}
        step, losses = int(state["step"]), list(state["losses"])
    elif images is not None:
        pool = folder_pool(backend, images)
    else:
        if not prompts:
            raise DreamlmcError("corrective training needs --prompts (or --images) for this prior")
        pool = sample_pool(backend, prompts, per_prompt, sample_guidance, sample_steps, seed, progress)
    net.to(backend.device)
    x_all = pool["x"]
    prompt_list = pool["prompts"]
    T = backend.num_train_timesteps
    t_lo, t_hi = int(t_range[0] * T), min(T - 1, int(t_range[1] * T))

    def save_ckpt():
        from dreamlmc.checkpoint import optimizer_state, save_state

        save_state(ckpt, {"net": net.state_dict(), "config": net.config, "opt": optimizer_state(opt),
                          "generator": g.get_state(),
                          "step": step, "losses": losses, "pool_x": x_all, "pool_prompts": prompt_list})

    bar = tqdm(total=steps, initial=step, desc="training k_psi", disable=not progress)
    t0 = time.time()
    while step < steps:
        idx = torch.randint(0, len(x_all), (batch_size,), generator=g)
        x = x_all[idx].to(backend.device)
        t = torch.randint(t_lo, t_hi + 1, (batch_size,), generator=g).to(backend.device)
        eps = torch.randn(x.shape, generator=g).to(backend.device)
        with torch.no_grad():
            cond = backend.encode_prompts([prompt_list[int(i)] for i in idx])
            x_hat = one_step_denoise(backend, x, t, eps, cond).float()
        loss = ((net(x, t.float() / T) - x_hat) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if step % checkpoint_every == 0:
            save_ckpt()
    bar.close()
    card = {**backend.card(), "t_range": list(t_range), "steps": step,
            "batch_size": batch_size, "source": str(images) if images else "prior samples",
            "initial_loss": float(np.mean(losses[:20])) if losses else None,
            "final_loss": float(np.mean(losses[-50:])) if losses else None, "seconds_this_run": time.time() - t0}
    save_corrective(net.cpu(), out, card)
    save_ckpt()
    return card


@torch.no_grad()
def radial_power_spectrum(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (h // 2,) mean power per integer radial frequency (mean over batch and channels)."""
    B, C, h, w = x.shape
    f = torch.fft.fftshift(torch.fft.fft2(x.float() - x.float().mean(dim=(-2, -1), keepdim=True)), dim=(-2, -1))
    p = (f.abs() ** 2).mean(dim=(0, 1))
    yy, xx = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(w) - w // 2, indexing="ij")
    r = torch.sqrt(yy.float() ** 2 + xx.float() ** 2).round().long()
    n = h // 2
    out = torch.zeros(n)
    for k in range(n):
        m = r == k
        out[k] = p[m].mean() if m.any() else 0
    return out


def diagnostic_figure(backend: DiffusionBackend, net: Corrective, x: torch.Tensor, prompts: Sequence[str],
                      path: Path, ts=(0.1, 0.3, 0.5, 0.7, 0.9), seed: int = 0) -> Dict:
    """Rows per t: x, x_hat, k_psi(x, t) for a few images, and a plot of their radial power spectra.

    Returns the spectra as lists (for JSON)."""
    from PIL import Image, ImageDraw

    g = torch.Generator().manual_seed(seed)
    T = backend.num_train_timesteps
    n = min(4, len(x))
    x = x[:n].to(backend.device)
    cond = backend.encode_prompts(list(prompts[:n]))
    tiles, spectra = [], {}
    for tf in ts:
        t = torch.full((n,), int(tf * (T - 1)), device=backend.device)
        eps = torch.randn(x.shape, generator=g).to(backend.device)
        with torch.no_grad():
            x_hat = one_step_denoise(backend, x, t, eps, cond).float()
            k = net.to(backend.device)(x, t.float() / T)
        tiles.append(torch.cat([backend.decode(v).cpu() for v in (x, x_hat, k)]))  # one row: x | x_hat | k_psi
        spectra[f"{tf:.1f}"] = {name: radial_power_spectrum(v).tolist() for name, v in
                                (("x", x), ("x_hat", x_hat), ("k_psi", k))}
    from dreamlmc.media import grid as image_grid

    grid = image_grid(tiles)
    img = Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).resize(
        (grid.shape[2] * 2, grid.shape[1] * 2), Image.NEAREST)
    # spectra panel: log power vs frequency, one small plot per t (x black, x_hat red, k_psi blue)
    pw, ph = 160, 120
    panel = Image.new("RGB", (pw * len(ts), ph + 16), "white")
    d = ImageDraw.Draw(panel)
    allv = [v for s in spectra.values() for arr in s.values() for v in arr[1:] if v > 0]
    lo, hi = math.log(min(allv)), math.log(max(allv))
    for i, (tf, s) in enumerate(spectra.items()):
        d.text((i * pw + 4, 2), f"t={tf}", fill="black")
        for name, colour in (("x", "black"), ("x_hat", "red"), ("k_psi", "blue")):
            arr = s[name][1:]
            pts = [(i * pw + 8 + j * (pw - 16) / max(1, len(arr) - 1),
                    16 + (ph - 8) * (1 - (math.log(max(v, 1e-12)) - lo) / max(hi - lo, 1e-6)))
                   for j, v in enumerate(arr)]
            d.line(pts, fill=colour, width=2)
    canvas = Image.new("RGB", (max(img.width, panel.width), img.height + panel.height), "white")
    canvas.paste(img, (0, 0))
    canvas.paste(panel, (0, img.height))
    canvas.save(path)
    return spectra
