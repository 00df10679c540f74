"""An image-to-image translation network trained by score distillation (the paper's amortised 2D use).

Where `dreamlmc image` optimises the pixels of one image, this trains a small convolutional network g_θ over a set
of source images so that its outputs follow a target prompt under SDS / LMC-SDS / DDS, while an L2 tie to the input keeps
their layout. Afterwards one forward pass translates new images; no diffusion model is needed at that point.

    g_θ(x) = sigmoid(logit(x) + f_θ(x)),  f_θ's last layer zero-initialised, so g_θ starts as the identity.
    loss = guidance(g_θ(x); target prompt) + l2 · ‖g_θ(x) − x‖² (per image, summed over pixels)

Sources: a folder of images, or (built-in prior) ground-truth renders of world prompts from random training
cameras. Noise is fresh at every step by default (one ε for a whole data set would bias the network).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from dreamlmc.errors import DreamlmcError
from dreamlmc.config import spec

@dataclass
class TranslateConfig:
    """Settings of `dreamlmc translate train` (presets with --config, dotted overrides, flags; saved beside the
    network)."""

    prompt: str = spec("", nonempty=True)
    source_prompts: Tuple[str, ...] = ()
    images: Optional[str] = None
    per_source: int = spec(32, ge=1, le=4096)
    steps: int = spec(300, ge=0, le=100_000)
    batch_size: int = spec(8, ge=1, le=256)
    lr: float = spec(2e-3, gt=0.0, le=10.0)
    l2: float = spec(0.5, ge=0.0, le=1e6)
    guidance: Literal["sds", "lmc-sds", "dds"] = "lmc-sds"
    # dds: what the source images show (default with --source: each render's own world prompt)
    source_prompt: Optional[str] = None
    guidance_scale: Optional[float] = spec(None, ge=0.0, le=1e4)
    fixed_eps: bool = False
    seed: int = spec(0, ge=0, le=2**63 - 1)
    hidden: int = spec(32, ge=1, le=1024)
    model: str = "builtin"
    device: str = "cpu"


class TranslationNet(nn.Module):
    """Residual in logit space; a full-resolution branch for detail and a half-resolution one for context."""

    def __init__(self, channels: int = 3, hidden: int = 32):
        super().__init__()
        self.config = {"channels": channels, "hidden": hidden}
        self.inp = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.SiLU())
        self.down = nn.Sequential(nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.SiLU(),
                                  nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU())
        self.mid = nn.Sequential(nn.Conv2d(2 * hidden, hidden, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU())
        self.out = nn.Conv2d(hidden, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x * 2 - 1)
        ctx = nn.functional.interpolate(self.down(h), size=h.shape[-2:], mode="bilinear", align_corners=False)
        delta = self.out(self.mid(torch.cat([h, ctx], dim=1)))
        return torch.sigmoid(torch.logit(x.clamp(1e-3, 1 - 1e-3)) + delta)


def train_translation(cfg: TranslateConfig, out: Path, progress: bool = True, figure: Optional[Path] = None) -> Dict:
    """Trains g_θ, writes out (.safetensors) + a .json card beside it; returns the card."""
    from dataclasses import replace

    from tqdm import tqdm

    from dreamlmc.guidance.backends import load_backend
    from dreamlmc.guidance.sds import GuidanceConfig, ScoreDistillation
    from dreamlmc.image import load_image_folder

    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.per_source < 1:
        raise DreamlmcError("--steps, --batch-size and --per-source must be >= 1")
    if cfg.l2 < 0:
        raise DreamlmcError("--l2 must be >= 0")
    if bool(cfg.images) == bool(cfg.source_prompts):
        raise DreamlmcError("pass either --images DIR or --source \"a blue cube\" ... (built-in world renders)")
    from dreamlmc.guidance.backends import backend_class

    backend_class(cfg.model).check_prompt(cfg.prompt)
    if cfg.guidance == "dds" and not (cfg.source_prompt or cfg.source_prompts):
        raise DreamlmcError("--guidance dds needs --source-prompt \"...\" (what the --images show)")
    if cfg.source_prompt and cfg.guidance != "dds":
        raise DreamlmcError("--source-prompt is used by --guidance dds only")
    if cfg.source_prompt:
        backend_class(cfg.model).check_prompt(cfg.source_prompt)
    world = backend_class(cfg.model).world()
    if cfg.source_prompts and world is None:
        raise DreamlmcError("--source renders the built-in world; with --model other than builtin pass --images DIR")
    backend = load_backend(cfg.model, device=cfg.device)
    size = backend.image_resolution
    torch.manual_seed(cfg.seed)
    data = (load_image_folder(cfg.images, size) if cfg.images
            else world.data.ground_truth_renders(cfg.source_prompts, cfg.per_source, size, cfg.seed)).to(backend.device)
    gcfg = GuidanceConfig(kind=cfg.guidance, fixed_eps=cfg.fixed_eps, eps_seed=cfg.seed)
    if cfg.guidance_scale is not None:
        gcfg = replace(gcfg, guidance_scale=cfg.guidance_scale)
    gcfg.validate()
    guidance = ScoreDistillation(gcfg, backend, seed=cfg.seed)
    net = TranslationNet(hidden=cfg.hidden).to(backend.device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    B = min(cfg.batch_size, len(data))
    cond, uncond = guidance.embed([cfg.prompt] * B)
    source_cond = None
    if cfg.guidance == "dds":  # one embedding per source image (ground_truth_renders keeps the prompts' order)
        names = ([cfg.source_prompt] * len(data) if cfg.source_prompt
                 else [p for p in cfg.source_prompts for _ in range(cfg.per_source)])
        source_cond = guidance.embed(names)[0]
    g = torch.Generator().manual_seed(cfg.seed)
    losses: List[float] = []
    for _ in tqdm(range(cfg.steps), disable=not progress, desc="translation net", leave=False):
        idx = torch.randperm(len(data), generator=g)[:B]
        x = data[idx.to(data.device)]
        y = net(x)
        extra = {} if source_cond is None else {"source_cond": source_cond[idx.to(source_cond.device)],
                                                 "source_images": x}
        loss = guidance(y, cond=cond, uncond=uncond, **extra)["loss"] + cfg.l2 * ((y - x) ** 2).sum() / B
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    card = {"kind": "dreamlmc-translation", "model_id": backend.model_id, "prompt": cfg.prompt,
            "resolution": size, "net": net.config, "steps": cfg.steps,
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
            "guidance_scale": gcfg.guidance_scale, "sources": len(data),
            "final_loss": float(np.mean(losses[-20:]))}
    from dreamlmc.netio import save_network

    save_network(net, out, card)
    if figure is not None:
        from dreamlmc.media import grid, save_png

        with torch.no_grad():
            x = data[:8]
            save_png(grid([x, net(x)]), figure)
    return card


def load_translation(path: str, device="cpu") -> Tuple[TranslationNet, Dict]:
    from dreamlmc.netio import load_network

    return load_network(Path(path), lambda card: TranslationNet(**card["net"]), "translation network",
                        "train one with 'dreamlmc translate train'", kind="dreamlmc-translation", device=device)


def apply_translation(net_path: str, inputs: Sequence[str], out: Path, device="cpu") -> Path:
    """Translates images; writes one PNG: inputs on the top row, outputs below."""
    from dreamlmc.image import load_image
    from dreamlmc.media import grid, save_png

    net, card = load_translation(net_path, device)
    if not inputs:
        raise DreamlmcError("pass at least one --input image")
    x = torch.cat([load_image(p, card["resolution"], flag="--input") for p in inputs]).to(device)
    with torch.no_grad():
        y = net(x)
    save_png(grid([x, y]), out)
    return out
