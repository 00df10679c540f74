"""The one interface every diffusion prior implements.

x denotes the prior's input space: pixels in [-1, 1] for pixel priors (the built-in prior, DeepFloyd IF stage I),
scaled VAE latents for Stable Diffusion. The guidance only ever talks to a backend through these methods.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch


class DiffusionBackend:
    #: a stable identifier of the weights (hub id, folder name, "builtin"); k_psi cards must name the same one
    model_id: str = "?"
    #: (C, h, w) of x, the tensors the UNet sees
    latent_shape: Tuple[int, int, int] = (3, 64, 64)
    #: the image resolution the backend's encoder expects (renders are resized to it)
    image_resolution: int = 64
    #: the diffusers scheduler of the training schedule, and its (T,) cumulative products of (1 - beta)
    scheduler = None
    alphas_cumprod: torch.Tensor
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    def __init__(self):
        self._prompt_cache: Dict[str, torch.Tensor] = {}

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    # --- to implement -----------------------------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> x (B, C, h, w), differentiable w.r.t. images."""
        raise NotImplementedError

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, h, w) -> images (B, 3, H, W) in [0, 1] (diagnostics only)."""
        raise NotImplementedError

    def _encode_prompts(self, prompts: List[str]) -> torch.Tensor:
        """Prompts -> embeddings (B, ...) on self.device; "" is the unconditional prompt."""
        raise NotImplementedError

    def _predict(self, x_t: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """One UNet call: ε predictions (B, C, h, w) for x_t (B, C, h, w), integer timesteps (B,), embeddings."""
        raise NotImplementedError

    # --- shared -----------------------------------------------------------------------------------------------
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Cached prompt embeddings, one row per prompt."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        if missing:
            with torch.no_grad():
                emb = self._encode_prompts(list(missing))
            for p, e in zip(missing, emb):
                self._prompt_cache[p] = e
        return torch.stack([self._prompt_cache[p] for p in prompts])

    @torch.no_grad()
    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                      uncond: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Conditional and unconditional ε predictions in one batched UNet call (uncond None: conditional only)."""
        if uncond is None:
            return self._predict(x_t, t, cond).float(), None
        out = self._predict(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, uncond])).float()
        return out.chunk(2)

    @classmethod
    def check_prompt(cls, prompt: str) -> None:
        """Raise DreamlmcError (one line) for a prompt this prior cannot take; called before any work starts. Real
        text encoders take any non-empty text."""
        from dreamlmc.errors import DreamlmcError

        if not prompt or not prompt.strip():
            raise DreamlmcError("the prompt is empty")

    #: whether prompts may name their view's ground ("..., on grey"; the built-in prior trained with ground words)
    ground_words: bool = False

    def unconditional_prompts(self, prompts: Sequence[str]) -> List[str]:
        """Each prompt's classifier-free guidance partner: the empty prompt (the built-in prior with ground words
        keeps a named ground in it)."""
        return [""] * len(prompts)

    def partial_prompts(self, prompts: List[str]) -> List[str]:
        """Each prompt's colour alone, for guidance.partial_scale and guidance.shape_boost (composable guidance): the
        built-in prior only, whose prompts have a grammar; a real text encoder's prompts have none to split."""
        from dreamlmc.errors import DreamlmcError

        raise DreamlmcError("guidance.partial_scale and guidance.shape_boost need the built-in prior (they split a "
                            "prompt into its colour and its shape); unset them for this model")

    @classmethod
    def world(cls):
        """The prior's world with known ground truth, or None (real priors). The built-in prior returns the
        dreamlmc.shapes modules (grammar, data, metrics): the one door through which core code reaches them."""
        return None

    def sample_images(self, prompts: Sequence[str], guidance_scale: float, steps: int,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Draw images (B, 3, R, R) in [0, 1] from the prior (the built-in prior only)."""
        from dreamlmc.errors import DreamlmcError

        raise DreamlmcError("dreamlmc sample draws from the built-in prior; for other models use their diffusers "
                            "pipelines")

    def default_corrective(self) -> Optional[str]:
        """Path of the k_psi shipped for this prior, if any."""
        return None

    def data_elevation_range(self) -> Optional[Tuple[float, float]]:
        """The camera elevations (degrees) of the images this prior was trained on, where known (the built-in
        prior's card); None: unknown, as for real priors trained on the web's photographs."""
        return None

    def card(self) -> Dict:
        return {"model_id": self.model_id, "latent_shape": list(self.latent_shape),
                "image_resolution": self.image_resolution}


class PixelSpaceBackend(DiffusionBackend):
    """A prior whose x is the image itself in [-1, 1] at image_resolution (built-in prior, DeepFloyd IF stage I)."""

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        R = self.image_resolution
        if images.shape[-2:] != (R, R):
            images = torch.nn.functional.interpolate(images, size=(R, R), mode="bilinear", align_corners=False,
                                                     antialias=True)
        return images * 2.0 - 1.0

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1.0) / 2.0).clamp(0, 1)
