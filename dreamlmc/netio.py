"""One save/load for the project's small networks (the built-in prior, k_ψ, the translation network): weights in
safetensors, never pickle, plus a JSON card (what the network is, how it was trained, its constructor config). The
card rides in the safetensors header, so the file alone is complete, and is also written beside it as NAME.json for
people to read. Both writes are atomic.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn

from dreamlmc.errors import DreamlmcError
from dreamlmc.io import atomic_write, atomic_write_text

CARD_KEY = "card"


def save_network(net: nn.Module, path: Path, card: Dict, dtype: Optional[torch.dtype] = None) -> Path:
    """Weights (cast to dtype, e.g. float16 for shipped files) and card -> path (.safetensors) and path.json."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: (v.detach().to(dtype) if dtype is not None else v.detach()).cpu().contiguous()
               for k, v in net.state_dict().items()}
    text = json.dumps(card, indent=2)
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata={"format": "pt", CARD_KEY: text}))
    atomic_write_text(path.with_suffix(".json"), text)
    return path


def read_card(path: Path) -> Dict:
    """The card of a saved network: from its header, or (files written before cards rode in headers) beside it."""
    from safetensors import safe_open

    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    if CARD_KEY in header:
        return json.loads(header[CARD_KEY])
    return json.loads(path.with_suffix(".json").read_text())


def load_network(path: Path, build: Callable[[Dict], nn.Module], what: str, hint: str, kind: Optional[str] = None,
                 device="cpu", dtype: torch.dtype = torch.float32) -> Tuple[nn.Module, Dict]:
    """-> (network in eval mode without gradients, card). build(card) constructs the empty network; kind, when
    given, must match card["kind"]. Every failure is one DreamlmcError line naming `what` and, via `hint`, the fix."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise DreamlmcError(f"{what} not found: {path}; {hint}")
    try:
        card = read_card(path)
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise DreamlmcError(f"{what} {path} has no readable card ({type(e).__name__}); {hint}")
    except Exception as e:  # safetensors' own errors for a file that is not safetensors
        raise DreamlmcError(f"{what} {path} is not a safetensors file ({type(e).__name__}); {hint}")
    if kind is not None and card.get("kind") != kind:
        raise DreamlmcError(f"{path} is not a {what} (its card says {card.get('kind')!r}); {hint}")
    try:
        net = build(card)
        net.load_state_dict({k: v.to(dtype) for k, v in load_file(str(path)).items()})
    except Exception as e:  # a corrupt or mismatched file is a user-fixable problem
        raise DreamlmcError(f"{what} {path} could not be loaded ({type(e).__name__}); {hint}")
    return net.to(device=device, dtype=dtype).eval().requires_grad_(False), card
