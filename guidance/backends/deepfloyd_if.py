"""DeepFloyd IF stage I through diffusers: pixel space 64x64 in [-1, 1], T5 text embeddings; the UNet predicts
ε and a variance (6 channels): the first 3 are ε."""
from __future__ import annotations

from typing import List, Optional

import torch

from dreamlmc.guidance.backends.base import PixelSpaceBackend
from dreamlmc.guidance.backends.hub import load


class DeepFloydIFBackend(PixelSpaceBackend):
    def __init__(self, model: str, is_local: bool, device="cpu", dtype: Optional[torch.dtype] = None,
                 max_length: int = 77):
        super().__init__()
        from diffusers import DDPMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer, T5EncoderModel

        self.model_id = model.rstrip("/").split("/")[-1] if is_local else model
        self.device = torch.device(device)
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.max_length = max_length
        kw = {"torch_dtype": self.dtype}
        self.tokenizer = load("tokenizer", model, is_local, AutoTokenizer.from_pretrained, subfolder="tokenizer")
        self.text_encoder = load("text encoder", model, is_local, weights=True, fn=T5EncoderModel.from_pretrained,
                                 subfolder="text_encoder", **kw)
        self.unet = load("UNet", model, is_local, weights=True, fn=UNet2DConditionModel.from_pretrained, subfolder="unet", **kw)
        sched = load("scheduler", model, is_local, DDPMScheduler.from_pretrained, subfolder="scheduler")
        for m in (self.text_encoder, self.unet):
            m.to(self.device).eval().requires_grad_(False)
        self.scheduler = sched  # the training schedule (guidance/diffusion.py samples through it)
        self.alphas_cumprod = sched.alphas_cumprod.float().to(self.device)
        self.image_resolution = int(self.unet.config.sample_size)
        self.latent_shape = (3, self.image_resolution, self.image_resolution)

    def _encode_prompts(self, prompts: List[str]) -> torch.Tensor:
        tok = self.tokenizer(prompts, padding="max_length", max_length=self.max_length, truncation=True,
                             return_tensors="pt")
        return self.text_encoder(tok.input_ids.to(self.device),
                                 attention_mask=tok.attention_mask.to(self.device))[0]

    def _predict(self, x_t, t, emb):
        out = self.unet(x_t.to(self.dtype), t.to(self.device), encoder_hidden_states=emb.to(self.dtype)).sample
        return out[:, :3]
