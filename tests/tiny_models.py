"""Tiny diffusers pipelines built from configs and saved locally, so the real loading code runs offline."""
from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ["a", "an", "red", "blue", "cube", "sphere", "photo", "of", "dog", "front", "side", "back", "view", ","]


def _tokenizer(max_length: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   model_max_length=max_length), len(vocab)


def _unet(in_ch: int, out_ch: int, size: int, cross: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=size, in_channels=in_ch, out_channels=out_ch,
                                block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                cross_attention_dim=cross, attention_head_dim=4)


def _scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                         beta_end=0.012)


def make_tiny_sd(folder: Path, seed: int = 0) -> Path:
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tok, n = _tokenizer(16)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=n, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=16, pad_token_id=0,
                                        bos_token_id=2, eos_token_id=3))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=4, sample_size=32)
    unet = _unet(4, 4, 16, 16)
    folder = Path(folder)
    tok.save_pretrained(folder / "tokenizer")
    text.save_pretrained(folder / "text_encoder")
    vae.save_pretrained(folder / "vae")
    unet.save_pretrained(folder / "unet")
    _scheduler().save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return folder


def make_tiny_if(folder: Path, seed: int = 0) -> Path:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tok, n = _tokenizer(16)
    text = T5EncoderModel(T5Config(vocab_size=n, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                                   pad_token_id=0))
    unet = _unet(3, 6, 16, 16)
    folder = Path(folder)
    tok.save_pretrained(folder / "tokenizer")
    text.save_pretrained(folder / "text_encoder")
    unet.save_pretrained(folder / "unet")
    _scheduler().save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "IFPipeline"}))
    return folder
