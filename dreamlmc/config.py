"""Typed configuration: nested dataclasses (each component declares its own next to its code), YAML presets that
set only what differs from the defaults, and dotted command-line overrides (`renderer.num_samples=48`).

Unknown keys, wrong types and values out of range are DreamlmcErrors naming the dotted key, the value and what is
allowed. Ranges are declared next to each key with spec(default, ge=..., le=..., ...) (stored in the dataclass field's
metadata) and checked here at load, for presets, overrides and defaults alike; every float must be finite.
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, TypeVar

import yaml

from dreamlmc.errors import DreamlmcError

T = TypeVar("T")


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")

def _check_value(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union:  # Optional[X]
        if value is None and type(None) in args:
            return None
        others = [a for a in args if a is not type(None)]
        return _check_value(value, others[0], key)
    if origin is typing.Literal:
        if value not in args:
            raise DreamlmcError(f"config key '{key}' must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin in (tuple, Tuple) or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise DreamlmcError(f"config key '{key}' must be a list, got {value!r}")
        if args and args[-1] is not Ellipsis and len(args) != len(value):
            raise DreamlmcError(f"config key '{key}' must have {len(args)} items, got {len(value)}")
        item_types = [args[0]] * len(value) if (args and args[-1] is Ellipsis) else (args or [Any] * len(value))
        return tuple(_check_value(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, item_types)))
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise DreamlmcError(f"config key '{key}' must be a list, got {value!r}")
        return [_check_value(v, args[0] if args else Any, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise DreamlmcError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DreamlmcError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e5 and 1e-3 (no dot) as strings
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DreamlmcError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise DreamlmcError(f"config key '{key}' must be a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise DreamlmcError(f"config key '{key}' is a section; give it keys, got {value!r}")
        return from_dict(tp, value, key)
    return value


def spec(default: Any, *, ge: Optional[float] = None, gt: Optional[float] = None, le: Optional[float] = None,
         lt: Optional[float] = None, ordered: bool = False, sums_to: Optional[float] = None,
         nonempty: bool = False, doc: str = ""):
    """A dataclass field with its allowed values: bounds (applied to each item of a tuple), ordered (a (lo, hi) range
    with lo <= hi), sums_to (items sum to this, e.g. probabilities), nonempty (strings)."""
    check = {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt, ordered=ordered, sums_to=sums_to,
                                   nonempty=nonempty).items() if v is not None and v is not False}
    return dataclasses.field(default=default, metadata={"check": check, "doc": doc})


def _describe(check: Dict[str, Any]) -> str:
    parts = []
    for key, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if key in check:
            parts.append(f"{op} {check[key]:g}" if isinstance(check[key], float) else f"{op} {check[key]}")
    return " and ".join(parts)


def check_value(value: Any, check: Dict[str, Any], key: str) -> None:
    """Raise DreamlmcError when value breaks the field's declared check (None passes: Optional)."""
    if value is None:
        return
    items = list(value) if isinstance(value, (tuple, list)) else [value]
    for i, v in enumerate(items):
        where = f"{key}[{i}]" if isinstance(value, (tuple, list)) else key
        if isinstance(v, float) and not math.isfinite(v):
            raise DreamlmcError(f"config key '{where}' must be a finite number, got {v!r}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            bad = (("ge" in check and not v >= check["ge"]) or ("gt" in check and not v > check["gt"]) or
                   ("le" in check and not v <= check["le"]) or ("lt" in check and not v < check["lt"]))
            if bad:
                raise DreamlmcError(f"config key '{where}' must be {_describe(check)}, got {v!r}")
        if check.get("nonempty") and isinstance(v, str) and not v.strip():
            raise DreamlmcError(f"config key '{where}' must not be empty")
    if check.get("ordered") and len(items) == 2 and not items[0] <= items[1]:
        raise DreamlmcError(f"config key '{key}' is a range (lo, hi) with lo <= hi, got {list(items)}")
    if "sums_to" in check and abs(sum(items) - check["sums_to"]) > 1e-6:
        raise DreamlmcError(f"config key '{key}' must sum to {check['sums_to']:g} (probabilities), got {list(items)} "
                            f"(sum {sum(items):g})")


def check_fields(obj: Any, prefix: str = "", flags: bool = False) -> None:
    """Check every field of a config dataclass instance against its spec; floats must be finite everywhere.
    flags=True: the settings came from command-line flags, and errors name the flag (--batch-size)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value):
            continue  # nested sections are checked when they are built
        try:
            check_value(value, f.metadata.get("check", {}), key)
        except DreamlmcError as e:
            if not flags:
                raise
            raise DreamlmcError(str(e).replace(f"config key '{key}", f"--{f.name.replace('_', '-')}", 1)
                                .replace("--" + f.name.replace("_", "-") + "' ", "--" + f.name.replace("_", "-") + " ", 1))


def from_dict(cls: Type[T], data: Dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a (partial) dict; missing keys keep their defaults."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in (data or {}).items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            raise DreamlmcError(f"unknown config key '{key}'" + _suggest(k, names))
        kwargs[k] = _check_value(v, hints[k], key)
    obj = cls(**kwargs)
    check_fields(obj, prefix)
    if hasattr(obj, "validate"):
        try:
            obj.validate()
        except DreamlmcError as e:  # name the section's dotted path
            msg = str(e)
            raise DreamlmcError(msg if not prefix or msg.startswith(prefix) or "'" + prefix in msg
                                else f"{prefix}: {msg}")
    return obj


def _suggest(k: str, names) -> str:
    import difflib

    close = difflib.get_close_matches(str(k), sorted(names), n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(names))})"


def to_dict(obj) -> Dict[str, Any]:
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v

    return conv(obj)


def parse_override(text: str) -> Tuple[List[str], Any]:
    if "=" not in text:
        raise DreamlmcError(f"override {text!r} must look like key=value (e.g. renderer.num_samples=48)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise DreamlmcError(f"override {text!r} has no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def merge(base: Dict[str, Any], update: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def set_dotted(d: Dict[str, Any], keys: Sequence[str], value: Any) -> None:
    for k in keys[:-1]:
        if not isinstance(d.get(k), dict):
            d[k] = {}
        d = d[k]
    d[keys[-1]] = value


def load_yaml(path: Path) -> Dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise DreamlmcError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise DreamlmcError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}")
    if not isinstance(data, dict):
        raise DreamlmcError(f"config file {path} must hold a mapping of keys")
    return data


def build(cls: Type[T], presets: Sequence[Dict[str, Any]] = (), overrides: Sequence[str] = ()) -> T:
    """Defaults <- each preset dict in order <- dotted overrides; returns a validated `cls`.

    The defaults are those of an instance `cls()`, so a section's default_factory (e.g. TrainConfig's tuned
    renderer) holds for the keys a preset leaves out, not only the section class's own defaults."""
    import copy

    data: Dict[str, Any] = to_dict(cls())
    for p in presets:
        data = merge(data, copy.deepcopy(p))  # never write overrides into the caller's preset dicts
    for o in overrides:
        keys, value = parse_override(o)
        set_dotted(data, keys, value)
    return from_dict(cls, data)


def dump_yaml(obj, path: Optional[Path] = None) -> str:
    text = yaml.safe_dump(to_dict(obj), sort_keys=False)
    if path is not None:
        from dreamlmc.io import atomic_write_text

        atomic_write_text(path, text)
    return text
