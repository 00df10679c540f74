"""Where weights come from: a local folder or a hub id. Failures become one-line DreamlmcErrors that say what
to do; nothing here runs at import time."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional, TypeVar

from dreamlmc.errors import DreamlmcError

T = TypeVar("T")


def resolve(model: str) -> tuple[str, bool]:
    """-> (what to pass to from_pretrained, is_local). A path-like model that does not exist is an error."""
    p = Path(model).expanduser()
    if p.exists():
        if not p.is_dir():
            raise DreamlmcError(f"--model {model}: expected a diffusers model folder, got a file")
        return str(p), True
    if model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise DreamlmcError(f"--model {model}: no such folder, and not a hub id of the form org/name")
    return model, False


def model_class(path: str, is_local: bool) -> Optional[str]:
    """The pipeline class named in a local folder's model_index.json (None for hub ids)."""
    if not is_local:
        return None
    index = Path(path) / "model_index.json"
    if not index.exists():
        raise DreamlmcError(f"--model {path}: no model_index.json; point --model at a diffusers pipeline folder "
                            "(the one holding unet/, scheduler/, text_encoder/ ...)")
    return json.loads(index.read_text()).get("_class_name")


PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


def require_safetensors(model: str, subfolder: Optional[str]) -> None:
    """A local component folder must hold safetensors weights; pickle files alone are refused (loading one runs
    arbitrary code)."""
    folder = Path(model) / (subfolder or "")
    files = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    if any(f.endswith(".safetensors") for f in files):
        return
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise DreamlmcError(
            f"{folder} holds only pickle weights ({', '.join(sorted(pickles)[:3])}); dreamlmc loads safetensors only. "
            "Convert the model once, where you trust it: python -c \"from diffusers import DiffusionPipeline; "
            f"DiffusionPipeline.from_pretrained('{model}').save_pretrained('{model}-safetensors', "
            "safe_serialization=True)\" and pass the new folder to --model")


def load(what: str, model: str, is_local: bool, fn: Callable[..., T], weights: bool = False, **kwargs) -> T:
    """fn(model, ...) with one-line errors. weights=True: a component with weights, which must be safetensors."""
    if weights:
        if is_local:
            require_safetensors(model, kwargs.get("subfolder"))
        kwargs["use_safetensors"] = True
    try:
        return fn(model, local_files_only=is_local or _offline(), **kwargs)
    except DreamlmcError:
        raise
    except Exception as e:  # OSError, HTTP errors, gated repos, missing subfolders ...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if is_local:
            raise DreamlmcError(f"could not load the {what} from {model}: {msg}")
        raise DreamlmcError(f"could not load the {what} of {model!r} from the hub ({msg}). Without network, or for "
                            "a gated model, download it first (huggingface-cli download, after accepting its "
                            "licence) and pass the local folder to --model")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
