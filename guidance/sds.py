"""Score distillation behind one interface: classic SDS and LMC-SDS, switched by `kind`.

Guidance-scale convention (one for all of dreamlmc): s = `guidance_scale`, ε̂ = ε_u + s (ε_c − ε_u); s = 1 is the
purely conditional model (DreamFusion's ω = s − 1; diffusers' guidance_scale is s).

SDS:      ∂L/∂x = w(t) (ε̂ − ε),  w(t) = σ_t² ("sds") or 1 ("uniform"), no backpropagation through the UNet.
          ε̂ − ε = (s − 1)(ε_c − ε_u) [L_cond]  +  (ε_c − ε) [L_proj]
LMC-SDS:  L_cond + L_lmc (see lmc.py), k_psi from corrective.py.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, Literal, Optional, Sequence, Tuple

import torch

from dreamlmc.errors import DreamlmcError
from dreamlmc.guidance.backends.base import DiffusionBackend
from dreamlmc.guidance.corrective import Corrective, load_corrective
from dreamlmc.guidance.diffusion import add_noise, coefficients, ddim_denoise, denoised
from dreamlmc.guidance.lmc import lmc_loss
from dreamlmc.guidance.noise import NoiseSource
from dreamlmc.config import spec


@dataclass
class LMCConfig:
    gradient: Literal["jacobian", "residual"] = "jacobian"
    x_hat_from: Literal["conditional", "guided"] = "conditional"
    c_t: Literal["alpha_over_sigma", "one"] = "alpha_over_sigma"
    weight: float = spec(1.0, ge=0.0, le=1e4)  # λ
    eps: Literal["shared", "fresh"] = "shared"  # ε of the L_lmc term: the L_cond one, or a fresh draw (2nd UNet call)


@dataclass
class GuidanceConfig:
    # dds (Delta Denoising Score) edits an image: it needs a source prompt (and a source image), so 2D only
    kind: Literal["sds", "lmc-sds", "dds"] = "lmc-sds"
    guidance_scale: float = spec(20.0, ge=0.0, le=1e4)
    # move the scale linearly over training to guidance_scale_end_factor x guidance_scale (so `--guidance-scale`
    # moves the whole schedule), or to guidance_scale_end when that is set (an absolute value; it wins over the
    # factor); both None: constant. A high scale while the shape forms, a lower one (less saturated, less
    # inflated) while it settles
    guidance_scale_end: Optional[float] = spec(None, ge=0.0, le=1e4)
    guidance_scale_end_factor: Optional[float] = spec(None, ge=0.0, le=100.0)
    t_range: Tuple[float, float] = spec((0.02, 0.98), ge=0.0, le=1.0, ordered=True)
    # Guidance interval (Kynkäänniemi et al. 2024): views noised to t >= guidance_t_max (a fraction of the
    # schedule) get the scale high_t_scale instead of guidance_scale. Large t decides the layout, and there a high
    # scale inflates what the prior draws (its red cubes at s = 7.5 cover 1.4x the area of those at s = 1 from the
    # same noise; spheres do not grow). In 3D it does the opposite (at 0.6: red cube 1.43x too large, IoU -0.149,
    # README row 63); None: one scale at every t.
    guidance_t_max: Optional[float] = spec(None, gt=0.0, le=1.0)
    high_t_scale: float = spec(1.0, ge=0.0, le=1e4)
    # Composable guidance (Liu et al. 2022), built-in prior only: the prompt term splits into the prompt's colour
    # alone (its shape word dropped) at this scale and the shape given the colour at guidance_scale,
    # ε̂ = ε_u + s_p (ε_colour − ε_u) + s (ε_c − ε_colour); s_p = s is plain guidance. In the prior's samples the
    # colour's share at s = 20 draws a white cube's dark mottled crown and s_p = 3 a clean cube, but in 3D s_p = 3
    # leaves the white cube a translucent fog (IoU −0.158 over 5 prompts, README row 102). One more UNet pass per
    # step. None: plain guidance
    partial_scale: Optional[float] = spec(None, ge=0.0, le=1e4)
    # Shape boost, built-in prior only: the shape given the colour guided harder than the colour,
    # ε̂ = ε_u + s (ε_c − ε_u) + r s (ε_c − ε_colour), r this value: composable guidance with the colour at s and
    # the shape at (1 + r) s, both following the scale's schedule (the scale that inflates a colour's blob is not
    # raised); r < 0 guides the shape more gently than the colour (r = −1: the colour alone). In 3D (5 prompts,
    # README rows 141-143): r = 0.5 IoU −0.059 (red cubes 1.1-1.3× large, pitted), −0.25 +0.004 (3 seeds), −0.5
    # −0.023, all within the white cube's swings. One more UNet pass per step. None: plain guidance
    shape_boost: Optional[float] = spec(None, ge=-1.0, le=100.0)
    # anneal the upper end of t_range linearly to this value over training (None: no annealing); large t shapes
    # the object early, small t refines it late
    t_max_end: Optional[float] = spec(None, ge=0.0, le=1.0)
    weighting: Literal["sds", "uniform"] = "sds"
    # timesteps: independent uniform draws ("random"), or a low-discrepancy sequence over the steps ("stratified":
    # every stretch of training covers the t range evenly, less variance in what the last steps did; no gain in 3D,
    # README row 64)
    t_sampling: Literal["random", "stratified"] = "random"
    fixed_eps: bool = True
    eps_seed: int = spec(0, ge=0, le=2**63 - 1)
    corrective: str = spec("auto", nonempty=True)  # path to a k_psi .safetensors, "auto" (the prior's shipped one) or "identity"
    grad_clip: Optional[float] = spec(None, gt=0.0)  # clip each element of the gradient on x to [-c, c]
    lmc: LMCConfig = field(default_factory=LMCConfig)

    def validate(self):
        lo, hi = self.t_range
        if not 0.0 <= lo <= hi <= 1.0:
            raise DreamlmcError(f"guidance.t_range must satisfy 0 <= lo <= hi <= 1, got {self.t_range}")
        if self.guidance_scale < 0:
            raise DreamlmcError(f"guidance.guidance_scale must be >= 0, got {self.guidance_scale}")
        end = self.end_scale()
        if end is not None and end > 1e4:
            raise DreamlmcError(f"guidance.guidance_scale_end_factor takes the scale to {end:g}; "
                                "it must stay <= 10000")
        if self.t_max_end is not None and self.t_max_end < lo:
            raise DreamlmcError(f"config key 'guidance.t_max_end' must be >= guidance.t_range[0] ({lo:g}), "
                                f"got {self.t_max_end}")
        if self.partial_scale is not None and self.shape_boost is not None:
            raise DreamlmcError("config keys 'guidance.shape_boost' and 'guidance.partial_scale' both split the "
                                "prompt term; set one of the two")
        split = next((k for k in ("partial_scale", "shape_boost") if getattr(self, k) is not None), None)
        if split and self.kind == "lmc-sds" and self.lmc.x_hat_from == "guided":
            raise DreamlmcError(f"config key 'guidance.{split}' does not combine with guidance.lmc.x_hat_from="
                                "guided (the corrective's target would ignore the split); use one of the two")
        if split and self.kind == "dds":
            raise DreamlmcError(f"config key 'guidance.{split}' does not apply to guidance.kind=dds (2D editing "
                                "guides by a source and a target prompt, not by one split prompt); drop one of the two")

    def end_scale(self) -> Optional[float]:
        """The guidance scale at the end of training (None: constant at guidance_scale)."""
        if self.guidance_scale_end is not None:
            return self.guidance_scale_end
        if self.guidance_scale_end_factor is not None:
            return self.guidance_scale * self.guidance_scale_end_factor
        return None


class ScoreDistillation:
    """Turns a frozen diffusion backend into a gradient on images.

    Call with images (B, 3, H, W) in [0, 1] (with grad) and per-view prompts; returns a dict whose "loss" has the
    guidance gradient as its gradient w.r.t. the images, plus the split (loss_cond, loss_proj or loss_lmc) and
    diagnostics (t, grad_norm, grad_norm_cond, grad_norm_second).
    """

    def __init__(self, cfg: GuidanceConfig, backend: DiffusionBackend, seed: int = 0,
                 corrective: Optional[Corrective] = None):
        self.cfg, self.backend = cfg, backend
        self.noise = NoiseSource(backend.latent_shape, cfg.fixed_eps, cfg.eps_seed, seed,
                                 stratified_t=cfg.t_sampling == "stratified")
        T = backend.num_train_timesteps
        self.t_min, self.t_max = int(round(cfg.t_range[0] * T)), min(T - 1, int(round(cfg.t_range[1] * T)))
        self.corrective = corrective
        self.scale = cfg.guidance_scale  # the current s (moves with training progress when a scale end is set)
        self._end_scale = cfg.end_scale()
        if cfg.kind == "lmc-sds" and corrective is None:
            self.corrective = self._load_corrective()

    def _load_corrective(self) -> Corrective:
        path = self.cfg.corrective
        if path == "auto":
            path = self.backend.default_corrective()
            if path is None:
                warnings.warn(f"no k_psi ships for prior {self.backend.model_id!r}; using the identity corrective "
                              "(LMC-SDS then equals SDS). Train one with 'dreamlmc corrective train'.")
                path = "identity"
        if path == "identity":
            return Corrective(channels=self.backend.latent_shape[0]).to(self.backend.device).eval().requires_grad_(
                False)
        net, card = load_corrective(path, expect_model_id=self.backend.model_id, device=self.backend.device)
        mine = getattr(self.backend, "fingerprint", None)
        fits = getattr(self.backend, "corrective_fingerprints", {mine})
        if mine and card.get("prior_fingerprint") is not None and card["prior_fingerprint"] not in fits:
            warnings.warn(f"k_psi {path} was trained for other weights of prior {self.backend.model_id!r} "
                          f"({card.get('prior_fingerprint')} vs {mine}); retrain it with 'dreamlmc corrective train'")
        return net

    def set_progress(self, fraction: float) -> None:
        """Training progress in [0, 1]; moves the upper timestep bound when t_max_end is set and the guidance scale
        when an end scale is (guidance_scale_end or guidance_scale_end_factor)."""
        f = min(max(fraction, 0.0), 1.0)
        if self._end_scale is not None:
            self.scale = self.cfg.guidance_scale + (self._end_scale - self.cfg.guidance_scale) * f
        if self.cfg.t_max_end is None:
            return
        T = self.backend.num_train_timesteps
        hi = self.cfg.t_range[1] + (self.cfg.t_max_end - self.cfg.t_range[1]) * f
        self.t_max = max(self.t_min, min(T - 1, int(round(hi * T))))

    def embed(self, prompts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        cond = self.backend.encode_prompts(list(prompts))
        uncond = self.backend.encode_prompts(self.backend.unconditional_prompts(list(prompts)))
        return cond, uncond

    def __call__(self, images: torch.Tensor, prompts: Sequence[str] = None, cond: torch.Tensor = None,
                 uncond: torch.Tensor = None, t: Optional[torch.Tensor] = None,
                 eps: Optional[torch.Tensor] = None, source_cond: Optional[torch.Tensor] = None,
                 source_images: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """source_cond / source_images: DDS only (the embedded source prompts, and the images they describe;
        default: the images themselves)."""
        cfg, be = self.cfg, self.backend
        if cond is None:
            cond, uncond = self.embed(prompts)
        partial = None
        if cfg.partial_scale is not None or cfg.shape_boost is not None:
            if prompts is None:
                raise ValueError("guidance.partial_scale and guidance.shape_boost need the prompts (they embed "
                                 "their colour alone)")
            partial = be.encode_prompts(be.partial_prompts(list(prompts)))
        if cfg.kind == "dds":
            return self._dds(images, cond, uncond, source_cond, source_images, t, eps)
        x = be.encode_images(images)
        B = x.shape[0]
        if t is None:
            t = self.noise.timesteps(B, self.t_min, self.t_max)
        if eps is None:
            eps = self.noise.sample(B)
        t = t.to(be.device)
        eps = eps.to(x.device, x.dtype)
        alpha, sigma = coefficients(be.alphas_cumprod, t)
        w = sigma ** 2 if cfg.weighting == "sds" else torch.ones_like(sigma)
        w4 = w.view(-1, 1, 1, 1)
        s = self.scale
        if cfg.guidance_t_max is not None:  # a scale per view: high_t_scale at t >= guidance_t_max
            high = t.float() >= cfg.guidance_t_max * be.num_train_timesteps
            s = torch.where(high, torch.tensor(float(cfg.high_t_scale)), torch.tensor(float(s))).to(x.device, x.dtype)
            s = s.view(-1, 1, 1, 1)
        guided = bool((torch.as_tensor(s) != 1.0).any()) or partial is not None  # the split needs ε_u at any s
        with torch.no_grad():
            x_t = add_noise(x.detach(), alpha, sigma, eps)
            eps_c, eps_u = be.predict_noise(x_t, t, cond, uncond if guided else None)
            if partial is not None:  # ε̂ − ε_c = (s_shape − 1)(ε_c − ε_p) + (s_colour − 1)(ε_p − ε_u)
                eps_p, _ = be.predict_noise(x_t, t, partial, None)
                if cfg.shape_boost is not None:  # the colour at s, the shape at (1 + r) s
                    s_shape, s_colour = (1.0 + cfg.shape_boost) * s, s
                else:
                    s_shape, s_colour = s, cfg.partial_scale
                g_cond = w4 * ((s_shape - 1.0) * (eps_c - eps_p) + (s_colour - 1.0) * (eps_p - eps_u))
            else:
                g_cond = w4 * (s - 1.0) * (eps_c - eps_u) if eps_u is not None else torch.zeros_like(eps_c)
            g_cond = torch.nan_to_num(g_cond)
        out: Dict[str, torch.Tensor] = {"t": t.float().mean() / be.num_train_timesteps}
        if self._end_scale is not None:
            out["guidance_scale"] = torch.tensor(float(self.scale))
        loss_cond = _reparam(x, g_cond, cfg.grad_clip) / B
        if cfg.kind == "sds":
            g_proj = torch.nan_to_num(w4 * (eps_c - eps))
            loss_second = _reparam(x, g_proj, cfg.grad_clip) / B
            out.update(loss_proj=loss_second, grad_norm_second=g_proj.norm())
            total_grad = g_cond + g_proj
        else:
            lc = cfg.lmc
            if lc.eps == "fresh":
                eps2 = self.noise.fresh(B).to(x.device, x.dtype)
                with torch.no_grad():
                    x_t2 = add_noise(x.detach(), alpha, sigma, eps2)
                    need_u = lc.x_hat_from == "guided" and guided
                    e_c2, e_u2 = be.predict_noise(x_t2, t, cond, uncond if need_u else None)
                x_t_l, e_c_l, e_u_l = x_t2, e_c2, e_u2
            else:
                x_t_l, e_c_l, e_u_l = x_t, eps_c, eps_u
            with torch.no_grad():
                e_hat = e_c_l if (lc.x_hat_from == "conditional" or e_u_l is None) else e_u_l + s * (e_c_l - e_u_l)
                x_hat = denoised(x_t_l, e_hat, alpha, sigma)
            c_t = alpha / sigma if lc.c_t == "alpha_over_sigma" else torch.ones_like(alpha)
            scale = lc.weight * w * c_t
            t_norm = t.float() / be.num_train_timesteps
            loss_second = lmc_loss(x, x_hat, t_norm, self.corrective, scale, lc.gradient) / B
            with torch.no_grad():
                g_lmc = scale.view(-1, 1, 1, 1) * (self.corrective(x.detach(), t_norm) - x_hat)
            out.update(loss_lmc=loss_second, grad_norm_second=g_lmc.norm())
            total_grad = g_cond + g_lmc
        out.update(loss=loss_cond + loss_second, loss_cond=loss_cond, grad_norm_cond=g_cond.norm(),
                   grad_norm=total_grad.norm())
        return out

    def refine(self, images: torch.Tensor, prompts: Sequence[str], t_range: Tuple[float, float],
               guidance_scale: float, ddim_steps: int) -> Dict[str, torch.Tensor]:
        """A photometric loss to the prior's own clean version of each image (SDEdit, Meng et al. 2022): the image
        noised to a t drawn uniformly from t_range (fractions of the schedule) with fresh ε, then denoised to t = 0
        by ddim_steps deterministic DDIM steps at guidance_scale. "loss" = ¼ ‖x − sg(x̃)‖² / B in the prior's
        space: for a pixel-space prior at the renders' resolution (x = 2 image − 1) that is ‖image − x̃‖² / B, the
        quality benchmark's photometric fit with x̃ in place of the ground truth. Where one-step score distillation pulls towards a blurred x̂ and needs its corrective,
        x̃ is a sharp image of the prior's; at a low scale and t it keeps what the image shows (the ground truth is
        close to a fixed point: README, ablation row 118), so it cleans a shape rather than grows it."""
        be = self.backend
        x = be.encode_images(images)
        B, T = x.shape[0], be.num_train_timesteps
        lo, hi = int(round(t_range[0] * T)), min(T - 1, int(round(t_range[1] * T)))
        t = self.noise.timesteps(B, max(1, lo), max(1, hi)).to(be.device)
        eps = self.noise.fresh(B).to(x.device, x.dtype)
        cond = be.encode_prompts(list(prompts))
        uncond = be.encode_prompts(be.unconditional_prompts(list(prompts))) if guidance_scale != 1.0 else None
        with torch.no_grad():
            alpha, sigma = coefficients(be.alphas_cumprod, t)
            x_t = add_noise(x.detach(), alpha, sigma, eps)
            target = torch.nan_to_num(ddim_denoise(lambda x_, t_: be.predict_noise(x_, t_, cond, uncond), x_t, t,
                                                   be.alphas_cumprod, ddim_steps, guidance_scale))
        loss = 0.25 * ((x - target) ** 2).sum() / B
        return {"loss": loss, "loss_refine": loss.detach(), "t": t.float().mean() / T}

    def _dds(self, images, cond, uncond, source_cond, source_images, t, eps) -> Dict[str, torch.Tensor]:
        """Delta Denoising Score (Hertz et al. 2023): the target prompt's guided ε̂ on the image minus the source
        prompt's guided ε̂ on the source image, both noised with the same t and ε, so that what the two share
        (the denoiser's blur, its error on this image) cancels and only the prompts' difference is left."""
        if source_cond is None:
            raise DreamlmcError("guidance kind 'dds' needs a source prompt (what the source image shows)")
        be, s = self.backend, self.scale
        x = be.encode_images(images)
        B = x.shape[0]
        t = (self.noise.timesteps(B, self.t_min, self.t_max) if t is None else t).to(be.device)
        eps = (self.noise.sample(B) if eps is None else eps).to(x.device, x.dtype)
        alpha, sigma = coefficients(be.alphas_cumprod, t)
        w = (sigma ** 2 if self.cfg.weighting == "sds" else torch.ones_like(sigma)).view(-1, 1, 1, 1)
        guided = s != 1.0
        with torch.no_grad():
            e_c, e_u = be.predict_noise(add_noise(x.detach(), alpha, sigma, eps), t, cond, uncond if guided else None)
            same = source_images is None
            xs = x.detach() if same else be.encode_images(source_images).to(x.device, x.dtype)
            # on the image itself the unconditional prediction is the same for both prompts: reuse it
            es_c, es_u = be.predict_noise(add_noise(xs, alpha, sigma, eps), t, source_cond,
                                          uncond if guided and not same else None)
            if guided:
                es_u = e_u if same else es_u
                e_c, es_c = e_u + s * (e_c - e_u), es_u + s * (es_c - es_u)
            g = torch.nan_to_num(w * (e_c - es_c))
        loss = _reparam(x, g, self.cfg.grad_clip) / B
        return {"t": t.float().mean() / be.num_train_timesteps, "loss": loss, "loss_cond": loss,
                "grad_norm": g.norm(), "grad_norm_cond": g.norm(), "grad_norm_second": torch.zeros(())}

    def state_dict(self) -> dict:
        return {"noise": self.noise.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.noise.load_state_dict(state["noise"])


def _reparam(x: torch.Tensor, g: torch.Tensor, clip: Optional[float]) -> torch.Tensor:
    """0.5 ||x − sg(x − g)||², whose gradient w.r.t. x is g."""
    if clip is not None:
        g = g.clamp(-clip, clip)
    return 0.5 * ((x - (x - g).detach()) ** 2).sum()
