"""Stable Diffusion 1.x / 2.x through diffusers: latent space; renders are upsampled to the VAE's resolution
(512 for the real models) and encoded with the VAE (mean of the posterior, times its scaling factor)."""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F

from dreamlmc.guidance.backends.base import DiffusionBackend
from dreamlmc.guidance.backends.hub import load


class StableDiffusionBackend(DiffusionBackend):
    def __init__(self, model: str, is_local: bool, device="cpu", dtype: Optional[torch.dtype] = None):
        super().__init__()
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer, CLIPTextModel

        self.model_id = model.rstrip("/").split("/")[-1] if is_local else model
        self.device = torch.device(device)
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        kw = {"torch_dtype": self.dtype}
        self.tokenizer = load("tokenizer", model, is_local, AutoTokenizer.from_pretrained, subfolder="tokenizer")
        self.text_encoder = load("text encoder", model, is_local, weights=True, fn=CLIPTextModel.from_pretrained,
                                 subfolder="text_encoder", **kw)
        self.vae = load("VAE", model, is_local, weights=True, fn=AutoencoderKL.from_pretrained, subfolder="vae", **kw)
        self.unet = load("UNet", model, is_local, weights=True, fn=UNet2DConditionModel.from_pretrained,
                         subfolder="unet", **kw)
        sched = load("scheduler", model, is_local, DDPMScheduler.from_pretrained, subfolder="scheduler")
        for m in (self.text_encoder, self.vae, self.unet):
            m.to(self.device).eval().requires_grad_(False)
        self.scheduler = sched  # the training schedule (guidance/diffusion.py samples through it)
        self.alphas_cumprod = sched.alphas_cumprod.float().to(self.device)
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_resolution = int(self.vae.config.sample_size)
        r = self.image_resolution // factor
        self.latent_shape = (int(self.unet.config.in_channels), r, r)
        self.scaling = float(self.vae.config.scaling_factor)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        R = self.image_resolution
        x = F.interpolate(images, size=(R, R), mode="bilinear", align_corners=False) * 2 - 1
        posterior = self.vae.encode(x.to(self.dtype)).latent_dist
        return posterior.mean.float() * self.scaling

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            img = self.vae.decode((x / self.scaling).to(self.dtype)).sample.float()
        return ((img + 1) / 2).clamp(0, 1)

    def _encode_prompts(self, prompts: List[str]) -> torch.Tensor:
        tok = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        return self.text_encoder(tok.input_ids.to(self.device))[0]

    def _predict(self, x_t, t, emb):
        return self.unet(x_t.to(self.dtype), t.to(self.device), encoder_hidden_states=emb.to(self.dtype)).sample
