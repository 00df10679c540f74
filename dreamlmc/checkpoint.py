"""Checkpoints: nested training state (tensors, numbers, strings, lists) <-> one safetensors file.

Tensors go into the file's tensors, everything else into its header as JSON (key STATE_KEY), so one atomic rename
replaces the whole checkpoint: a kill never pairs new tensors with old metadata, and no pickle is ever loaded.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import torch

from dreamlmc.io import atomic_write

CHECKPOINT = "checkpoints/last.safetensors"
STATE_KEY = "dreamlmc_state"  # safetensors header entry with the checkpoint's non-tensor state (JSON)


def flatten_state(prefix: str, obj, tensors: Dict[str, torch.Tensor], meta: Dict):
    """Nested state dicts -> flat safetensors tensors + JSON metadata (no pickle anywhere)."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
    elif isinstance(obj, dict):
        for k, v in obj.items():
            flatten_state(f"{prefix}/{k}" if prefix else str(k), v, tensors, meta)
    elif isinstance(obj, (list, tuple)) and any(isinstance(v, (torch.Tensor, dict)) for v in obj):
        meta[prefix + "#len"] = len(obj)
        for i, v in enumerate(obj):
            flatten_state(f"{prefix}/{i}", v, tensors, meta)
    else:
        meta[prefix] = obj


def unflatten_state(tensors: Dict[str, torch.Tensor], meta: Dict):
    root: Dict = {}

    def put(path: str, value):
        parts = path.split("/")
        d = root
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = value

    for k, v in tensors.items():
        put(k, v)
    lists = {k[:-4] for k in meta if k.endswith("#len")}
    for k, v in meta.items():
        if not k.endswith("#len"):
            put(k, v)

    def fix(path: str, obj):
        if isinstance(obj, dict):
            obj = {k: fix(f"{path}/{k}" if path else k, v) for k, v in obj.items()}
            if path in lists:
                return [obj[str(i)] for i in range(len(obj))]
        return obj

    return fix("", root)


def checkpoint_state(path: Path) -> Dict:
    """The non-tensor state of a checkpoint file (step, RNG metadata, ...), without loading its tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    if STATE_KEY in header:
        return json.loads(header[STATE_KEY])
    return json.loads(Path(path).with_suffix(".json").read_text())


def optimizer_state(opt: torch.optim.Optimizer) -> Dict:
    sd = opt.state_dict()
    return {"state": {str(k): v for k, v in sd["state"].items()}, "param_groups": sd["param_groups"]}


def load_optimizer_state(opt: torch.optim.Optimizer, sd: Dict) -> None:
    groups = [dict(g, params=[int(p) for p in g["params"]]) for g in sd["param_groups"]]
    state = {int(k): v for k, v in sd.get("state", {}).items()}  # an empty state (before the first step) is not stored
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_state(path: Path, state: Dict, what: str = "") -> Path:
    """Write a nested state dict to one safetensors file, atomically (what: advice for a failed write)."""
    from safetensors.torch import save_file

    tensors, meta = {}, {}
    flatten_state("", state, tensors, meta)
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata={"format": "pt", STATE_KEY: json.dumps(meta)}),
                 what=what)
    Path(path).with_suffix(".json").unlink(missing_ok=True)  # the two-file layout of older versions
    return Path(path)


def load_state(path: Path) -> Dict:
    """The nested state dict written by save_state (or by an older version's two-file layout)."""
    from safetensors.torch import load_file

    return unflatten_state(load_file(str(path)), checkpoint_state(path))
