"""The training loop: camera sampler -> renderer -> guidance -> optimiser step, then the exporter.

The trainer writes into a run folder (dreamlmc/runs.py): metrics.jsonl, checkpoints/last.safetensors (everything
needed to resume bit for bit: field and occupancy grid, optimiser, RNG states, the fixed ε, step; see checkpoint.py)
and, once finished, model.glb, preview.png and turntable.mp4 (or .gif).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from dreamlmc import config as config_lib
from dreamlmc.cameras import OVERHEAD_ELEVATION, CameraConfig, CameraSampler, orbit_cameras, view_words
from dreamlmc.errors import DreamlmcError
from dreamlmc.export import ExportConfig, extract_mesh, write_mesh
from dreamlmc.guidance.sds import GuidanceConfig, LMCConfig, ScoreDistillation
from dreamlmc.checkpoint import CHECKPOINT, load_optimizer_state, load_state, optimizer_state, save_state
from dreamlmc.io import atomic_write_text
from dreamlmc.media import grid, save_png, write_video
from dreamlmc.renderers.field import FieldConfig
from dreamlmc.renderers.renderer import Renderer, RendererConfig, opacity_entropy
from dreamlmc.renderers.shading import ShadingConfig, choose_mode
from dreamlmc.config import spec


# The defaults of a training run are tuned on the built-in prior (README "3D quality", measured over 8 prompts
# against ground truth): an sdf geometry, Lambertian shading only (the prior saw lit objects; albedo and
# textureless views cost it 2-3x its denoising error), an opacity penalty that keeps objects from inflating
# (ramped in over the first quarter: at full strength from step 0 it emptied 2 of 24 runs),
# cameras at elevations the prior was trained on, fresh ε every step (a fixed ε inflates objects by
# 1.6x) and LMC-SDS's corrective term at weight λ = 3. The section classes keep the general DreamFusion
# defaults; configs/stable_diffusion.yaml and configs/deepfloyd_if.yaml set those back for real priors, where
# this recipe is not measured.
def _train_camera() -> CameraConfig:
    return CameraConfig(elevation_range=(0.0, 30.0))


def _train_renderer() -> RendererConfig:
    # orientation 0.1 (with the scale schedule below): README ablation rows 28-30
    return RendererConfig(field=FieldConfig(geometry="sdf"), shading=ShadingConfig(probabilities=(0.0, 1.0, 0.0)),
                          sparsity_weight=200.0, sparsity_ramp=0.25, orientation_weight=0.1)


def _train_guidance() -> GuidanceConfig:
    # λ = 3: over 8 prompts x 3 seeds, albedo ΔE 22.4 -> 11.4, normal consistency 0.84 -> 0.89, Chamfer 0.149 ->
    # 0.106, torus holes 1/3 -> 3/3, the white cube's IoU 0.17 -> 0.49 (README, "The LMC switches").
    # s from 20 to 0.6 x 20 = 12 over training, with orientation 0.1: IoU 0.716 -> 0.750 over 8 x 3 (paired
    # +0.034 ± 0.016), ΔE 11.4 -> 9.1, Chamfer 0.106 -> 0.090 (README ablation rows 25-29)
    return GuidanceConfig(fixed_eps=False, guidance_scale_end_factor=0.6, lmc=LMCConfig(weight=3.0))


@dataclass
class RefineConfig:
    """The last part of training as a refinement (DreamGaussian's and Magic3D's second stage, in image space): from
    `start` (a fraction of training) on, the objective is a photometric loss to the prior's own clean version of
    each render (ScoreDistillation.refine: the render noised to t in t_range, denoised by ddim_steps DDIM steps at
    guidance_scale) instead of score distillation, and the opacity penalty, which exists against score
    distillation's growth, is scaled by sparsity_factor. At s <= 7.5 and t <= 0.5 the prior's denoising keeps a
    ground-truth render's coverage (0.90-1.04x; at s = 20 coloured objects grow 1.35-1.7x) and turns the default's
    pitted white cube into a clean, if grey, one (README, ablation row 118). None: score distillation to the end."""

    start: Optional[float] = spec(None, ge=0.0, le=1.0)
    t_range: Tuple[float, float] = spec((0.2, 0.5), ge=0.0, le=1.0, ordered=True)
    guidance_scale: float = spec(3.0, ge=0.0, le=1e4)
    ddim_steps: int = spec(4, ge=1, le=1000)
    sparsity_factor: float = spec(0.0, ge=0.0, le=1.0)
    # score distillation's loss kept beside the refinement's at this weight (0: the refinement alone)
    sds_weight: float = spec(0.0, ge=0.0, le=100.0)
    # the guidance scale of that score distillation (None: the guidance's own schedule, guidance.guidance_scale to
    # its end scale): a lower scale exaggerates each shape's features less (README, ablation rows 144-146)
    sds_guidance_scale: Optional[float] = spec(None, ge=1.0, le=1e4)
    # weight of (V / V0 - 1)^2, V the field's mean occupancy at ANCHOR_POINTS fixed points of its box, V0 its value
    # at the refinement's first step: holds the volume the refinement starts with (its own objective has no
    # restoring force on size; README ablation rows 120, 127). 0: off
    volume_anchor: float = spec(0.0, ge=0.0, le=1e6)


def _train_refine() -> RefineConfig:
    # The last 30 % as a refinement to the prior's SDEdit version of each render (t 0.05-0.2, 2 DDIM steps at
    # s = 3), with score distillation and the opacity penalty kept at 0.25 beside it. Over 8 prompts x 3 seeds
    # (README ablation rows 126 and 130): normal consistency 0.896 -> 0.910 (+0.014 ± 0.006), albedo ΔE 10.1 ->
    # 7.8, Chamfer 0.108 -> 0.098, IoU 0.727 -> 0.752 (+0.025 ± 0.024), the lowest prompt 0.42 -> 0.53, for 1.24x
    # the training seconds (1.12x end to end); the renders are less sharp (0.69 -> 0.58 of ground truth's
    # Laplacian variance). That score distillation runs at s = 7.5 instead of the schedule's 14 -> 12 (row 146, 8 x 3
    # branched from shared step-700 states on one 2-core AMD EPYC: IoU 0.738 -> 0.762, paired +0.024 ± 0.011, ΔE
    # 7.5 -> 6.3, Chamfer 0.099 -> 0.090; 22/24 nearest their own shape against 23/24; the same UNet passes).
    # The SD and IF presets keep it off (refine.start: null): measured on the built-in prior only.
    return RefineConfig(start=0.7, t_range=(0.05, 0.2), ddim_steps=2, sds_weight=0.25, sparsity_factor=0.25,
                        sds_guidance_scale=7.5)


ANCHOR_POINTS = 8192  # RefineConfig.volume_anchor's fixed points (drawn from their own seed: no draw from the run's)


# Bumped by every change that alters what a run trains to without changing its config (benchmarks key their cached
# runs by config and this): 2 = the generator seeded again after the guidance is built (ablation row 116).
RESULTS_VERSION = 2
def trace_opacity(trace: Optional[List[float]], opacity: float, full_strength: bool) -> List[float]:
    """One step of TrainConfig.collapse_ratio's trace [moving average of the renders' opacity (~20 steps), its peak
    since the opacity penalty reached full strength]."""
    avg = opacity if trace is None else 0.95 * trace[0] + 0.05 * opacity
    peak = trace[1] if trace is not None else 0.0
    return [avg, max(peak, avg) if full_strength else peak]


def collapsed(trace: Optional[List[float]], ratio: float) -> bool:
    """Whether the trace's moving average has fallen below ratio × its peak (a peak of 0: not measured yet)."""
    return bool(ratio) and trace is not None and trace[0] < ratio * trace[1]


EMPTY_OPACITY = 1e-3  # a training render whose mean opacity is below this shows no object (see empty_patience)


@dataclass
class TrainConfig:
    prompt: str = ""
    model: str = spec("builtin", nonempty=True)
    device: str = "cpu"
    seed: int = spec(0, ge=0, le=2**63 - 1)
    steps: int = spec(1000, ge=0, le=1_000_000)
    batch_size: int = spec(1, ge=1, le=64)
    resolution: int = spec(0, ge=0, le=1024)  # render size for guidance; 0: the prior's resolution
    lr: float = spec(0.01, gt=0.0, le=10.0)
    lr_background: float = spec(0.001, gt=0.0, le=10.0)
    # learning rates at the end of training as a fraction of the start's, decayed exponentially with the step
    # (stable-dreamfusion's 0.1); 1: constant
    lr_decay: float = spec(1.0, gt=0.0, le=1.0)
    adam_eps: float = spec(1e-15, gt=0.0, le=1.0)
    # The asset from an exponential moving average of the renderer's weights (decay per step) over the steps from
    # ema_start (a fraction of training) on, instead of the last step's weights: SDS is a noisy optimisation and its
    # last iterate carries the last steps' noise (0.99: noise in 3D, README row 62). None: the last step's weights.
    ema_decay: Optional[float] = spec(None, gt=0.0, lt=1.0)
    ema_start: float = spec(0.5, ge=0.0, lt=1.0)
    view_prompts: bool = True  # append ", front view" etc. per camera
    # append ", on grey" to the prompt of a training view drawn on a grey ground (renderer.field.background=grey),
    # and keep it in its unconditional, when the prior knows ground words (a built-in prior trained with
    # tools/train_prior.py --ground-words); without them it does nothing
    ground_prompts: bool = True
    # White objects on the built-in prior: a white face lit head-on is as bright as the white ground the shipped
    # prior has only ever seen, and its white cubes come out as pitted crowns 1.4-1.7x too tall. When on, a prompt
    # whose colour is white, on model=builtin with the default white background, trains on "builtin-dark" (the prior
    # fine-tuned with half of its data on 0.2-0.3 greys) with half of its views on such a grey (white cube, 5 seeds:
    # IoU 0.44 -> 0.71, normal consistency 0.64 -> 0.84; README row 105). The share and the greys come from that
    # prior's card (all of the views for a colour-keyed prior, README row 137). The run's config.yaml records them.
    # Off by default: that prior fails the prior gate (shape accuracy 79 % at s = 1, 65 % at s = 20, against >= 90 %;
    # README row 106) and has no k_psi of its own, which the quality issue requires of a retrained prior.
    white_on_dark: bool = False
    # Start from another run's field (a run folder or a checkpoint file: its renderer weights at its last
    # checkpoint) instead of the initial sphere, to refine an asset; optimiser, step and schedules start afresh.
    # Its renderer.* settings must match this run's.
    init_from: Optional[str] = None
    checkpoint_every: int = spec(100, ge=1)
    max_bad_steps: int = spec(20, ge=1)  # consecutive non-finite steps before the run stops
    # when the training renders have been empty (mean opacity < EMPTY_OPACITY) this many steps in a row while an
    # opacity penalty is on, go back to the last checkpoint and halve the penalty (at most 4 times; 0: never). An
    # emptied field gets no gradient back from any view, so without this the run can only end in "no surface". The
    # last step goes back at once when it finds no surface: empty, or, for the sdf geometry, no sample inside
    # (sdf < 0), since a VolSDF field that has lost its zero level set still renders a haze (measured: a white cube
    # whose inside samples fell from ~3,000 to 0 over its last 25 steps, at opacity ~0.03, then failed at export).
    # Mid-training, 10 steps without an inside sample happen and pass (a blue sphere had 7 in a row at step ~45 and
    # grew back), so there the opacity criterion stays; but no step without a surface is checkpointed.
    empty_patience: int = spec(10, ge=0, le=1_000_000)
    # a partial collapse goes back the same way: when the moving average of the training renders' opacity (over ~20
    # steps) falls below this fraction of its peak since the opacity penalty's ramp ended (0: never). Replayed on 112
    # stored runs (ablation rows 115, 117): white cubes flattening into slabs fall below 0.3 of their peak within
    # 50-150 steps; no run of a coloured prompt fell below 0.46 of its own. At 0.4 both slabs it sent back ended
    # higher (IoU 0.08 -> 0.57, 0.06 -> 0.40) but nearest a sphere: opt-in. Needs an opacity penalty, like the
    # vanish recovery.
    collapse_ratio: float = spec(0.0, ge=0.0, lt=1.0)
    preview_resolution: int = spec(96, ge=8, le=1024)
    turntable_frames: int = spec(36, ge=1, le=720)
    turntable_fps: int = spec(24, ge=1, le=120)
    camera: CameraConfig = field(default_factory=_train_camera)
    renderer: RendererConfig = field(default_factory=_train_renderer)
    guidance: GuidanceConfig = field(default_factory=_train_guidance)
    export: ExportConfig = field(default_factory=ExportConfig)
    refine: RefineConfig = field(default_factory=_train_refine)

    def validate(self):
        if self.steps < 0:
            raise DreamlmcError(f"steps must be >= 0, got {self.steps}")
        if self.batch_size < 1:
            raise DreamlmcError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise DreamlmcError(f"device must be cpu or cuda, got {self.device!r}")
        fc = self.renderer.field
        if fc.background != "grey" and (fc.background_white_prob > 0 or fc.background_white_prob_end is not None):
            raise DreamlmcError("renderer.field.background_white_prob(_end) mixes white into grey backgrounds; "
                                f"set renderer.field.background=grey (got {fc.background!r})")
        if self.guidance.kind == "dds":
            raise DreamlmcError("guidance.kind 'dds' edits images ('dreamlmc image --init', 'dreamlmc translate'); "
                                "3D training takes 'sds' or 'lmc-sds'")


def _check_overhead_views(words: List[str], backend) -> None:
    """words: the view words training can draw (cameras.view_words). Views above OVERHEAD_ELEVATION carry
    "overhead": refuse them for a prior whose data never went that high (the shipped built-in prior's token table
    has the word, DreamFusion's, but its images stop at 45°)."""
    data = backend.data_elevation_range()
    if data is None or "overhead" not in words or data[1] > OVERHEAD_ELEVATION:
        return
    raise DreamlmcError(
        f"the prior's images stop at {data[1]:g}° elevation, so it never learnt the word 'overhead' that views above "
        f"{OVERHEAD_ELEVATION:g}° carry; keep camera.elevation_range below {OVERHEAD_ELEVATION:g}° with "
        "camera.overhead_prob=0, set view_prompts=false, or fine-tune the prior on higher views "
        "(tools/make_shapes_data.py --elevation -10 85)")


@contextlib.contextmanager
def _corrupt_as_error(what: str, hint: str = ""):
    """Any failure to read a checkpoint (other than dreamlmc's own errors) -> one clear DreamlmcError."""
    try:
        yield
    except DreamlmcError:
        raise
    except Exception as e:
        raise DreamlmcError(f"{what} is unreadable or corrupt ({type(e).__name__}){hint}")


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: Path, backend=None, progress: bool = True,
                 log: Callable[[str], None] = print):
        self.cfg, self.run_dir, self.progress, self.log = cfg, Path(run_dir), progress, log
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise DreamlmcError("--device cuda was asked for but CUDA is not available; use --device cpu")
        if backend is None:
            from dreamlmc.guidance.backends import load_backend

            backend = load_backend(cfg.model, device=self.device)
        self.backend = backend
        backend.check_prompt(cfg.prompt)  # words the prior cannot take fail now, before any work
        if cfg.view_prompts:  # and so do view words the prior's weights never saw
            words = view_words(cfg.camera)
            backend.encode_prompts(self.prompts_for(words))
            _check_overhead_views(words, backend)
        if cfg.guidance.partial_scale is not None or cfg.guidance.shape_boost is not None:  # the prior must split it
            backend.partial_prompts([cfg.prompt])
        res = cfg.resolution or backend.image_resolution
        self.resolution = res
        self.sampler = CameraSampler(cfg.camera, res, res, seed=cfg.seed)
        # views from below for the opacity penalty only (RendererConfig.sparsity_below_views)
        below = dataclasses.replace(cfg.camera, elevation_range=tuple(cfg.renderer.sparsity_below_elevation),
                                    sequence=False, progressive_until=None)
        self.sampler_below = CameraSampler(below, max(8, res // 2), max(8, res // 2), seed=cfg.seed + 5)
        self.guidance = ScoreDistillation(cfg.guidance, backend, seed=cfg.seed + 1)
        # seeded after every network that loads weights (the prior, k_psi): their random initialisation, which the
        # weights overwrite, must not move the run's own draws. It did once: a token row added to the built-in
        # prior's text encoder shifted every run's field initialisation and cameras (ablation row 116).
        torch.manual_seed(cfg.seed)
        self.renderer = Renderer(cfg.renderer, device=self.device).to(self.device)
        self.generator = torch.Generator().manual_seed(cfg.seed + 2)
        bg = [p for n, p in self.renderer.named_parameters() if n.startswith("field.background")]
        main = [p for n, p in self.renderer.named_parameters() if not n.startswith("field.background")]
        groups = [{"params": main, "lr": cfg.lr}]
        if bg:
            groups.append({"params": bg, "lr": cfg.lr_background})
        self.optimizer = torch.optim.Adam(groups, betas=(0.9, 0.99), eps=cfg.adam_eps)
        self.base_lrs = [g["lr"] for g in groups]
        self.step = 0
        self.bad_steps = 0
        self.skipped = 0
        self.sparsity_scale = 1.0  # halved each time the object vanished and the run went back (state, see above)
        self.empty_steps = 0
        self.opacity_trace: Optional[List[float]] = None  # [moving average, its peak] (TrainConfig.collapse_ratio)
        self.refine_volume: Optional[float] = None  # V0 of RefineConfig.volume_anchor, once the refinement starts
        self._anchor_points: Optional[torch.Tensor] = None  # RefineConfig.volume_anchor's points, drawn once
        self.ema: Optional[Dict[str, torch.Tensor]] = None  # see TrainConfig.ema_decay
        self._stop_signal: Optional[int] = None

    # ---------------------------------------------------------------------------------------------- state
    def state(self) -> Dict:
        return {"renderer": self.renderer.state_dict(), "optimizer": optimizer_state(self.optimizer),
                "sampler": self.sampler.state_dict(), "sampler_below": self.sampler_below.state_dict(),
                "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(), "guidance": self.guidance.state_dict(),
                "step": self.step, "skipped": self.skipped, "sparsity_scale": self.sparsity_scale,
                **({"ema": self.ema} if self.ema is not None else {}),
                **({"opacity_trace": list(self.opacity_trace)} if self.opacity_trace is not None else {}),
                **({"refine_volume": self.refine_volume} if self.refine_volume is not None else {})}

    def save_checkpoint(self) -> Path:
        return save_state(self.run_dir / CHECKPOINT, self.state(),
                          what=f"free space and resume with 'dreamlmc train --resume {self.run_dir}'")

    def load_checkpoint(self, path: Optional[Path] = None) -> None:
        path = Path(path or self.run_dir / CHECKPOINT)
        with _corrupt_as_error(f"checkpoint {path}", "; start again with --force or restore the file"):
            st = load_state(path)
            self.renderer.load_state_dict(st["renderer"])
            load_optimizer_state(self.optimizer, st["optimizer"])
            self.sampler.load_state_dict(st["sampler"])
            if "sampler_below" in st:
                self.sampler_below.load_state_dict(st["sampler_below"])
            self.generator.set_state(st["generator"])
            torch.set_rng_state(st["torch_rng"])
            self.guidance.load_state_dict(st["guidance"])
            self.step, self.skipped = int(st["step"]), int(st.get("skipped", 0))
            self.sparsity_scale = float(st.get("sparsity_scale", 1.0))
            self.ema = st.get("ema")
            trace = st.get("opacity_trace")
            self.opacity_trace = [float(v) for v in trace] if trace is not None else None
            v0 = st.get("refine_volume")
            self.refine_volume = float(v0) if v0 is not None else None
            self.empty_steps = 0

    def init_field_from(self, source: str) -> None:
        """TrainConfig.init_from: load another run's renderer weights (only those) before step 0."""
        src = Path(source)
        path = src / CHECKPOINT if src.is_dir() else src
        if not path.is_file():
            raise DreamlmcError(f"init_from {source}: no run folder with a checkpoint or checkpoint file there "
                                f"({path} is missing)")
        with _corrupt_as_error(f"init_from {path}"):
            weights = load_state(path)["renderer"]
        try:
            self.renderer.load_state_dict(weights)
        except RuntimeError:
            raise DreamlmcError(f"init_from {source}: its field does not fit this run's renderer (another geometry, "
                                "hash grid or background); train with the same renderer.* settings as that run")

    # ---------------------------------------------------------------------------------------------- loop
    def prompts_for(self, views: List[str], grey: Optional[List[bool]] = None) -> List[str]:
        """The prompt of each training view: its view word (view_prompts) and, on a grey ground, the ground
        (ground_prompts with a prior that knows ground words)."""
        prompts = ([f"{self.cfg.prompt}, {v} view" for v in views] if self.cfg.view_prompts
                   else [self.cfg.prompt] * len(views))
        if grey is not None and self.names_grounds:
            prompts = [f"{p}, on grey" if g else p for p, g in zip(prompts, grey)]
        return prompts

    @property
    def names_grounds(self) -> bool:
        return (self.cfg.ground_prompts and getattr(self.backend, "ground_words", False)
                and self.cfg.renderer.field.background == "grey")

    def objective(self, out: Dict[str, torch.Tensor], cams, mode: str) -> Dict[str, torch.Tensor]:
        """The term that shapes the asset: score distillation of the renders. -> dict with "loss" (its gradient
        w.r.t. the images is the guidance's) and diagnostics. A photometric fit (the quality benchmark's ceiling)
        overrides this."""
        grey = None
        if self.names_grounds:  # the view's ground, as the renderer drew it (white or a grey level)
            grey = (out["background"].flatten(1).min(1).values < 0.999).tolist()
        prompts = self.prompts_for(cams.views, grey)
        if self.refining:
            rc = self.cfg.refine
            r = self.guidance.refine(out["rgb"], prompts, rc.t_range, rc.guidance_scale, rc.ddim_steps)
            if rc.sds_weight > 0:  # score distillation goes on beside it, scaled
                self.guidance.set_progress(self.fraction_done)
                if rc.sds_guidance_scale is not None:
                    self.guidance.scale = rc.sds_guidance_scale
                g = self.guidance(out["rgb"], prompts)
                r = dict(g, loss=r["loss"] + rc.sds_weight * g["loss"], loss_refine=r["loss_refine"])
            return r
        self.guidance.set_progress(self.fraction_done)
        return self.guidance(out["rgb"], prompts)

    def _volume_anchor(self) -> torch.Tensor:
        """(V / V0 - 1)^2 of RefineConfig.volume_anchor; V0 is measured (and checkpointed) on the first call."""
        if self._anchor_points is None:  # fixed for the run: drawn once, from their own seed
            b = self.renderer.cfg.field.bound
            pts = (torch.rand(ANCHOR_POINTS, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1) * b
            self._anchor_points = pts.to(self.device)
        v = self.renderer.occupancy_at(self._anchor_points)
        if self.refine_volume is None:
            self.refine_volume = max(float(v.detach()), 1e-6)
        return (v / self.refine_volume - 1.0).square()

    @property
    def refining(self) -> bool:
        """Whether this step belongs to the refinement stage (TrainConfig.refine)."""
        start = self.cfg.refine.start
        return start is not None and self.fraction_done >= start

    def train_step(self) -> Dict[str, float]:
        cfg = self.cfg
        t0 = time.perf_counter()
        self.renderer.train()
        self.renderer.set_progress(self.fraction_done)
        self.renderer.update_occupancy(self.step, self.generator)
        cams = self.sampler.sample(cfg.batch_size, self.fraction_done).to(self.device)
        mode = choose_mode(self.step, cfg.renderer.shading, self.generator)
        out = self.renderer(cams, mode, self.generator)
        g = self.objective(out, cams, mode)
        loss = g["loss"] + cfg.renderer.orientation_weight * out["orientation"]
        sparsity_below = torch.zeros(())
        ramp = cfg.renderer.sparsity_ramp  # grows in the opacity and the volume penalty alike
        frac = 1.0 if ramp <= 0 else min(1.0, self.step / (ramp * max(1, cfg.steps)))
        if self.refining:
            frac *= cfg.refine.sparsity_factor
        if cfg.renderer.sparsity_weight > 0:
            sparsity = out["sparsity"]
            if cfg.renderer.sparsity_below_views:
                below = self.sampler_below.sample(cfg.renderer.sparsity_below_views).to(self.device)
                sparsity_below = self.renderer(below, "albedo", self.generator)["sparsity"]
                sparsity = sparsity + sparsity_below
            loss = loss + frac * cfg.renderer.sparsity_weight * self.sparsity_scale * sparsity
        if cfg.renderer.volume_weight > 0:
            loss = loss + frac * cfg.renderer.volume_weight * self.sparsity_scale * out["volume"]
        anchor = self._volume_anchor() if self.refining and cfg.refine.volume_anchor > 0 else None
        if anchor is not None:
            loss = loss + cfg.refine.volume_anchor * anchor
        if self.renderer.field.is_sdf and cfg.renderer.eikonal_weight > 0:
            loss = loss + cfg.renderer.eikonal_weight * out["eikonal"]
        if cfg.renderer.smooth_weight > 0:
            loss = loss + cfg.renderer.smooth_weight * out["smoothness"]
        if cfg.renderer.z_variance_weight > 0:
            loss = loss + cfg.renderer.z_variance_weight * out["z_variance"]
        entropy = torch.zeros(())
        if cfg.renderer.entropy_weight > 0:
            entropy = opacity_entropy(out["opacity"])
            loss = loss + cfg.renderer.entropy_weight * entropy
        self._set_learning_rates()
        self.optimizer.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss))
        if finite:
            loss.backward()
            finite = all(torch.isfinite(p.grad).all() for p in self.renderer.parameters() if p.grad is not None)
        if finite:
            self.optimizer.step()
            self.bad_steps = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.bad_steps += 1
            self.skipped += 1
            if self.bad_steps >= cfg.max_bad_steps:
                raise DreamlmcError(f"{self.bad_steps} non-finite steps in a row at step {self.step}; stopped (the "
                                    "last good checkpoint is kept). Lower the learning rate or guidance scale.")
        self.step += 1
        self._update_ema()
        loss = loss.detach()
        g = {k: v.detach() for k, v in g.items()}
        rec = {"step": self.step, "loss": float(loss) if finite else None, "mode": mode, "points": int(out["points"]),
               "inside": int(out["inside_points"]),
               "orientation": float(out["orientation"].detach()), "opacity": float(out["opacity"].detach().mean()),
               "eikonal": float(out["eikonal"].detach()), "smoothness": float(out["smoothness"].detach()),
               "z_variance": float(out["z_variance"].detach()), "entropy": float(entropy.detach()),
               "sparsity_below": float(sparsity_below.detach()),
               "volume": float(out.get("volume", torch.zeros(())).detach()),
               **({"volume_anchor": float(anchor.detach())} if anchor is not None else {}),
               "lr": self.optimizer.param_groups[0]["lr"],
               "skipped": not finite, "seconds": time.perf_counter() - t0}
        rec.update({k: float(v) for k, v in g.items() if k != "loss" and v.dim() == 0})
        self.empty_steps = self.empty_steps + 1 if rec["opacity"] < EMPTY_OPACITY else 0
        self._trace_opacity(rec["opacity"])
        return rec

    @torch.no_grad()
    def _update_ema(self) -> None:
        d = self.cfg.ema_decay
        if d is None or self.step < self.cfg.ema_start * self.cfg.steps:
            return
        params = dict(self.renderer.named_parameters())
        if self.ema is None:
            self.ema = {n: p.detach().clone() for n, p in params.items()}
        else:
            for n, p in params.items():
                self.ema[n].lerp_(p.detach(), 1.0 - d)

    @torch.no_grad()
    def _apply_ema(self) -> None:
        """The finished run's weights become their moving average (the asset the outputs and exports show)."""
        if self.ema is None:
            return
        for n, p in self.renderer.named_parameters():
            p.copy_(self.ema[n])
        self.renderer.update_occupancy(self.step, self.generator, force=True)

    def _no_surface(self, rec: Dict) -> bool:
        """Whether a step's renders found no surface (see TrainConfig.empty_patience)."""
        return rec["opacity"] < EMPTY_OPACITY or (self.renderer.field.is_sdf and rec["inside"] == 0)

    def _set_learning_rates(self) -> None:
        """lr × lr_decay ** (step / steps) for each group: a function of the step only, so a resumed run gets the
        same rates."""
        factor = self.cfg.lr_decay ** min(1.0, self.fraction_done)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def _recovers(self) -> bool:
        """Whether a vanished object is recovered: only an opacity penalty can be halved."""
        return bool(self.cfg.empty_patience) and (self.cfg.renderer.sparsity_weight > 0
                                                  or self.cfg.renderer.volume_weight > 0)

    @property
    def fraction_done(self) -> float:
        """Training progress, step / steps: what every schedule (scale, camera, field, learning rate) reads."""
        return self.step / max(1, self.cfg.steps)

    @property
    def times_went_back(self) -> int:
        """How often the object vanished and the run went back (each time halving the opacity penalty, whose scale
        is in the checkpoint, so the count survives a resume)."""
        return round(-math.log2(self.sparsity_scale))

    def _trace_opacity(self, opacity: float) -> None:
        """The moving average of the renders' opacity and its peak once the penalty is at full strength (only when
        TrainConfig.collapse_ratio is on: it draws no random numbers, so it changes no run it does not send back)."""
        if self.cfg.collapse_ratio:
            self.opacity_trace = trace_opacity(self.opacity_trace, opacity,
                                               self.fraction_done >= self.cfg.renderer.sparsity_ramp)

    def _recover_if_empty(self, rec: Dict) -> bool:
        """Go back to the last checkpoint with half the opacity penalty when the object has vanished, or collapsed
        (TrainConfig.collapse_ratio), or when the last step found no surface (see TrainConfig.empty_patience).
        -> True when it went back."""
        ending = self.step == self.cfg.steps and self._no_surface(rec)
        vanished = self.empty_steps >= self.cfg.empty_patience
        lost_shape = not vanished and collapsed(self.opacity_trace, self.cfg.collapse_ratio)
        if (not self._recovers() or not (vanished or ending or lost_shape)
                or self.sparsity_scale < 1.0 / 8 or not (self.run_dir / CHECKPOINT).exists()):
            return False
        lost, scale = self.step, self.sparsity_scale * 0.5
        if vanished:
            what, why = "vanished", f"empty renders since step {lost - self.empty_steps}"
        elif lost_shape:
            avg, peak = self.opacity_trace
            what, why = "collapsed", (f"its renders' mean opacity {avg:.2f}, below {self.cfg.collapse_ratio:g} of "
                                      f"its peak {peak:.2f}, at step {lost}")
        else:
            what, why = "vanished", f"no surface at the last step, {lost}"
        self.load_checkpoint()
        self.sparsity_scale = scale
        self._reseed(self.times_went_back)
        self.log(f"the object {what} ({why}); back to step {self.step} with the opacity penalty x{scale:g} and "
                 "new draws of cameras, t and ε")
        return True

    def _reseed(self, attempt: int) -> None:
        """New random streams (cameras, renderer, t and fresh ε; a fixed ε* is kept) for the attempt-th try after
        a vanish: replaying the same draws can vanish the same way whatever the penalty (measured: a black sphere
        at λ = 3 vanished 4 times at step ~40). Derived from the run's seed, and saved in later checkpoints, so a
        run stays reproducible and resumable."""
        base = self.cfg.seed + 7919 * attempt
        torch.manual_seed(base)
        self.guidance.noise.generator.manual_seed(base + 1)
        self.generator.manual_seed(base + 2)
        self.sampler.generator.manual_seed(base + 3)

    def _on_signal(self, signum, frame):
        self._stop_signal = signum

    def train(self) -> bool:
        """Run until cfg.steps; returns True when finished, False when stopped by SIGINT/SIGTERM (checkpointed)."""
        from tqdm import tqdm

        cfg = self.cfg
        metrics = self.run_dir / "metrics.jsonl"
        _truncate_metrics(metrics, self.step)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.progress, desc="training",
                   unit="step", dynamic_ncols=True)
        if self.step == 0 and self._recovers() and not (self.run_dir / CHECKPOINT).exists():
            self.save_checkpoint()  # somewhere to go back to should the object vanish early
        mf = open(metrics, "a")
        try:
            while self.step < cfg.steps:
                rec = self.train_step()
                mf.write(json.dumps(rec) + "\n")
                mf.flush()
                if self._recover_if_empty(rec):
                    mf.close()
                    _truncate_metrics(metrics, self.step)
                    mf = open(metrics, "a")
                    bar.reset(total=cfg.steps)
                    bar.update(self.step)
                    continue
                bar.update(1)
                bar.set_postfix(loss=f"{rec['loss']:.3g}" if rec["loss"] is not None else "nan",
                                t=f"{rec['t']:.2f}" if "t" in rec else "-", refresh=False)
                if self.step == cfg.steps:
                    self._apply_ema()
                # no periodic checkpoint of a step that found no surface: a run that goes back must land on one
                if (self.step % cfg.checkpoint_every == 0 and not self._no_surface(rec)) or self.step == cfg.steps:
                    self.save_checkpoint()
                if self._stop_signal is not None:
                    self.save_checkpoint()
                    bar.close()
                    self.log(f"stopped by signal at step {self.step}; checkpoint written, resume with "
                             f"--resume {self.run_dir}")
                    return False
        finally:
            mf.close()
            bar.close()
            for s, h in old.items():
                signal.signal(s, h)
        if self.step == 0 or self.step % cfg.checkpoint_every:
            self.save_checkpoint()
        return True

    # ---------------------------------------------------------------------------------------------- outputs
    @torch.no_grad()
    def render_views(self, n: int, resolution: int, elevation: Optional[float] = None) -> Dict[str, torch.Tensor]:
        self.renderer.eval()
        self.renderer.set_progress(self.fraction_done)  # the field's schedules as trained
        cams = orbit_cameras(self.cfg.camera, n, resolution, resolution, elevation=elevation).to(self.device)
        out = self.renderer(cams, ("lambertian", "textureless"), perturb=False, chunk=1)
        return {"rgb": out["rgb"].cpu(), "textureless": out["rgb_textureless"].cpu(), "normal": out["normal"].cpu(),
                "opacity": out["opacity"].cpu()}

    def write_outputs(self) -> Dict[str, Path]:
        cfg = self.cfg
        outs = {}
        views = self.render_views(8, cfg.preview_resolution)
        outs["preview"] = save_png(grid([views["rgb"], views["textureless"]]), self.run_dir / "preview.png")
        outs["turntable"] = self.write_turntable()
        outs["mesh"] = self.export_mesh(self.run_dir / f"model.{cfg.export.format}", cfg.export)
        return outs

    def write_turntable(self) -> Path:
        cfg = self.cfg
        frames = self.render_views(cfg.turntable_frames, cfg.preview_resolution)["rgb"]
        frames = [(f.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8) for f in frames]
        return write_video(frames, self.run_dir / "turntable.mp4", cfg.turntable_fps)

    def surface(self):
        """(fn, level): the scalar field (points (N, 3) -> (N,)) whose super-level set at `level` is the asset's
        solid; level "auto" lets the exporter match the renders' silhouettes (density fields)."""
        field_ = self.renderer.field.eval()
        if field_.is_sdf:
            return (lambda p: -field_.sdf(p.to(self.device))), 0.0

        def density(p):
            return field_.density(p.to(self.device))

        return density, self.cfg.export.threshold

    def export_mesh(self, path: Path, ecfg: ExportConfig, threshold=None, grid=None) -> Path:
        field_ = self.renderer.field.eval()
        fn, level = self.surface()

        def albedo(p):
            return field_(p.to(self.device))[1]

        mesh = extract_mesh(fn, albedo, bound=self.cfg.renderer.field.bound, cfg=ecfg,
                            threshold=level if threshold is None else threshold, grid=grid)
        write_mesh(mesh, path, ecfg.format)
        return path


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metric lines written after the checkpoint's step (they will be recomputed)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError):
            continue
    atomic_write_text(path, "".join(k + "\n" for k in keep))


def resolve_config(presets: List[Dict], overrides: List[str]) -> TrainConfig:
    return white_on_dark(config_lib.build(TrainConfig, presets, overrides))


def white_on_dark(cfg: TrainConfig) -> TrainConfig:
    """TrainConfig.white_on_dark: the settings a white prompt trains with on the built-in prior (unchanged for any
    other prompt, another model, or a background the user chose)."""
    field_cfg = cfg.renderer.field
    if not (cfg.white_on_dark and cfg.model == "builtin" and field_cfg.background == "white"):
        return cfg
    from dreamlmc.guidance.backends import backend_class

    try:  # the world's grammar, through the built-in backend (the core does not import the world itself)
        colour = backend_class(cfg.model).world().grammar.parse_prompt(cfg.prompt)["colour"]
    except DreamlmcError:  # not a prompt of the world: the backend's own check reports it
        return cfg
    if colour != "white":
        return cfg
    # the grounds the dark-ground prior's data had for this colour (its card): all views on grey for a
    # colour-keyed prior, half of them for a mixed one
    white_prob, greys = backend_class(cfg.model).dark_ground_views(colour)
    field_cfg = dataclasses.replace(field_cfg, background="grey", background_grey_range=greys,
                                    background_white_prob=white_prob, background_white_prob_end=None)
    return dataclasses.replace(cfg, model="builtin-dark",
                               renderer=dataclasses.replace(cfg.renderer, field=field_cfg))
