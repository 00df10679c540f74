"""Diffusion priors behind one interface (base.py). `load_backend` picks one from --model."""
from __future__ import annotations

from typing import Optional

import torch

from dreamlmc.errors import DreamlmcError


def is_builtin(model: str) -> bool:
    """Whether --model names the built-in prior ("builtin", its dark-ground fine-tune "builtin-dark", or a path to
    its weights, *.safetensors)."""
    return model in ("builtin", "builtin-dark") or model.endswith(".safetensors")


def backend_class(model: str):
    """The backend class --model names, without loading any weights: for its class-level answers (check_prompt,
    world). Real priors share the base class's answers."""
    if is_builtin(model):
        from dreamlmc.guidance.backends.builtin import BuiltinBackend

        return BuiltinBackend
    from dreamlmc.guidance.backends.base import DiffusionBackend

    return DiffusionBackend


def check_prompt(model: str, prompt: str) -> None:
    """The backend's prompt check without loading any weights (the batch runner checks every prompt first)."""
    backend_class(model).check_prompt(prompt)


def load_backend(model: str, device="cpu", dtype: Optional[torch.dtype] = None):
    """"builtin" (or a path to built-in prior weights, *.safetensors), a local diffusers folder, or a hub id."""
    from dreamlmc.guidance.backends.hub import model_class, resolve

    if is_builtin(model):
        from dreamlmc.guidance.backends.builtin import BuiltinBackend

        return BuiltinBackend(None if model == "builtin" else model, device=device)
    path, is_local = resolve(model)
    cls = model_class(path, is_local) or ("IFPipeline" if "IF-I" in model else "StableDiffusionPipeline")
    if cls.startswith("IF"):
        from dreamlmc.guidance.backends.deepfloyd_if import DeepFloydIFBackend

        return DeepFloydIFBackend(path, is_local, device=device, dtype=dtype)
    if "StableDiffusion" in cls:
        from dreamlmc.guidance.backends.stable_diffusion import StableDiffusionBackend

        return StableDiffusionBackend(path, is_local, device=device, dtype=dtype)
    raise DreamlmcError(f"--model {model}: pipeline {cls!r} is not supported; use Stable Diffusion 1.x/2.x, "
                        "DeepFloyd IF stage I, or builtin")
