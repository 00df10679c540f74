"""2D uses of the guidance (paper §5.1): optimisation-based synthesis from 50 % grey, or editing an input image
with an optional L2 tie to it (SDS, LMC-SDS, or DDS, which also needs a prompt describing the input). No renderer: the pixels themselves are the parameters (through a sigmoid)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Literal, Optional

import numpy as np
import torch

from dreamlmc.errors import DreamlmcError
from dreamlmc.config import spec


@dataclass
class ImageConfig:
    """Settings of `dreamlmc image` (presets with --config, dotted overrides, flags; saved beside the output)."""

    prompt: str = spec("", nonempty=True)
    init: Optional[str] = None
    l2: float = spec(0.0, ge=0.0, le=1e6)
    guidance: Literal["sds", "lmc-sds", "dds"] = "lmc-sds"
    source_prompt: Optional[str] = None  # dds: what --init shows
    guidance_scale: Optional[float] = spec(None, ge=0.0, le=1e4)
    steps: int = spec(300, ge=0, le=100_000)
    seed: int = spec(0, ge=0, le=2**63 - 1)
    eps_seed: int = spec(0, ge=0, le=2**63 - 1)
    fixed_eps: bool = True
    variations: int = spec(1, ge=1, le=64)
    lr: float = spec(0.02, gt=0.0, le=10.0)
    model: str = spec("builtin", nonempty=True)
    device: str = "cpu"
    resolution: int = spec(0, ge=0, le=512)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def load_image(path: str, size: int, flag: str = "--init") -> torch.Tensor:
    """One image file -> (1, 3, size, size) in [0, 1]; a missing or unreadable file is a one-line error naming flag."""
    from PIL import Image

    p = Path(path)
    if not p.exists():
        raise DreamlmcError(f"{flag} {path}: no such file")
    try:
        im = Image.open(p).convert("RGB").resize((size, size), Image.BICUBIC)
    except Exception:
        raise DreamlmcError(f"{flag} {path}: not a readable image")
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


def image_files(folder: Path) -> List[Path]:
    """The images of a folder, sorted by name (the order of load_image_folder)."""
    return sorted(f for f in Path(folder).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)


def load_image_folder(folder: str, size: int, flag: str = "--images") -> torch.Tensor:
    """Every image in a folder (sorted by name) -> (N, 3, size, size) in [0, 1]."""
    p = Path(folder)
    if not p.is_dir():
        raise DreamlmcError(f"{flag} {folder} is not a folder")
    files = image_files(p)
    if not files:
        raise DreamlmcError(f"{flag} {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return torch.cat([load_image(str(f), size, flag) for f in files])


def optimise_image(guidance, prompt: str, init: torch.Tensor, steps: int, lr: float, l2: float,
                   progress: bool = True, source_prompt: Optional[str] = None) -> torch.Tensor:
    """init (1, 3, H, W) in [0, 1] -> optimised image (1, 3, H, W). source_prompt: DDS's description of init."""
    from tqdm import tqdm

    logits = torch.logit(init.clamp(1e-3, 1 - 1e-3)).clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr)
    cond, uncond = guidance.embed([prompt])
    extra = {}
    if source_prompt is not None:
        extra = {"source_cond": guidance.embed([source_prompt])[0], "source_images": init}
    for _ in tqdm(range(steps), disable=not progress, desc="optimising", leave=False):
        img = torch.sigmoid(logits)
        loss = guidance(img, cond=cond, uncond=uncond, **extra)["loss"]
        if l2 > 0:
            loss = loss + l2 * ((img - init) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.sigmoid(logits).detach()


def run_image(cfg: ImageConfig, out: Path, progress: bool = True) -> Path:
    from dataclasses import replace

    from dreamlmc.guidance.backends import load_backend
    from dreamlmc.guidance.sds import GuidanceConfig, ScoreDistillation
    from dreamlmc.media import save_png

    if cfg.steps < 0 or cfg.variations < 1:
        raise DreamlmcError("--steps must be >= 0 and --variations >= 1")
    if cfg.l2 > 0 and cfg.init is None:
        raise DreamlmcError("--l2 ties the result to --init; pass --init IMAGE too")
    if cfg.guidance == "dds" and cfg.init is None:
        raise DreamlmcError("--guidance dds edits an image: pass --init IMAGE (and --source-prompt)")
    if cfg.guidance == "dds" and not cfg.source_prompt:
        raise DreamlmcError("--guidance dds needs --source-prompt \"...\" (what the --init image shows)")
    if cfg.source_prompt and cfg.guidance != "dds":
        raise DreamlmcError("--source-prompt is used by --guidance dds only")
    from dreamlmc.guidance.backends import check_prompt

    check_prompt(cfg.model, cfg.prompt)
    if cfg.source_prompt:
        check_prompt(cfg.model, cfg.source_prompt)
    backend = load_backend(cfg.model, device=cfg.device)
    size = cfg.resolution or backend.image_resolution
    init = load_image(cfg.init, size) if cfg.init else torch.full((1, 3, size, size), 0.5)
    base = GuidanceConfig(kind=cfg.guidance, fixed_eps=cfg.fixed_eps)
    if cfg.guidance_scale is not None:
        base = replace(base, guidance_scale=cfg.guidance_scale)
    results = []
    for i in range(cfg.variations):
        gcfg = replace(base, eps_seed=cfg.eps_seed + i)
        torch.manual_seed(cfg.seed)
        guidance = ScoreDistillation(gcfg, backend, seed=cfg.seed)
        results.append(optimise_image(guidance, cfg.prompt, init, cfg.steps, cfg.lr, cfg.l2, progress,
                                      source_prompt=cfg.source_prompt)[0])
    grid = torch.cat(results, dim=-1)
    if cfg.init:
        grid = torch.cat([init[0], grid], dim=-1)
    save_png(grid, out)
    return out
