"""Fused CPU kernels, compiled at first use with torch's cpp_extension (C++, parallel through ATen's thread pool).

The build is cached by torch (TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions), so only the first use on a
machine pays the compile (about 40 s on the 2-core CPU). Where it cannot be built (no C++ compiler, no ninja,
DREAMLMC_FUSED=0) the caller falls back to the pure-PyTorch path after one warning line; nothing here raises.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Optional

_SOURCE = Path(__file__).parent / "csrc" / "hash_encoding_cpu.cpp"
_module = None  # None: not tried yet; False: unavailable


def hash_kernel(quiet: bool = False):
    """The compiled hash-encoding module (forward, backward), or None where it cannot be had."""
    global _module
    if _module is None:
        _module = _build() or False
    return _module or None


def _build():
    if os.environ.get("DREAMLMC_FUSED", "1") == "0":
        return None
    try:
        from torch.utils.cpp_extension import load

        isa, flags = isa_flags()
        name = f"dreamlmc_hash_encoding_cpu_{isa}"
        # -fopenmp: ATen's parallel_for is an inline OpenMP region, compiled into this module. The instruction set
        # is part of the name, so a home folder shared by different machines never loads a build the CPU lacks.
        with _build_lock(name):
            return load(name=name, sources=[str(_SOURCE)], extra_cflags=["-O3", "-fopenmp"] + flags,
                        extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as e:  # no compiler, no ninja, a failed build: the pure-PyTorch path serves
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        warnings.warn(f"dreamlmc: the fused CPU hash encoding could not be built ({reason}); using the "
                      "pure-PyTorch path (slower)", RuntimeWarning, stacklevel=3)
        return None


@contextlib.contextmanager
def _build_lock(name: str):
    """Hold an OS lock on the build folder while torch loads (and maybe builds) the module, and clear a stale
    torch lock there first.

    torch marks a build in progress with a plain `lock` file and waits, without a time limit, while it exists; a
    process killed mid-load (SIGKILL, OOM) leaves it behind and every later load would hang forever. Every
    dreamlmc load holds this flock (released by the OS when its holder dies) before torch's lock, so a torch lock
    found while holding it belongs to a dead process and is removed."""
    try:
        import fcntl

        from torch.utils.cpp_extension import _get_build_directory

        folder = Path(_get_build_directory(name, verbose=False))
    except Exception:  # no fcntl (Windows) or a torch without the helper: torch's own lock alone
        yield
        return
    with open(folder / "dreamlmc.flock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            stale = folder / "lock"
            if stale.exists():
                warnings.warn(f"dreamlmc: removed a stale build lock left by a killed process ({stale})",
                              RuntimeWarning, stacklevel=4)
                stale.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def isa_flags():
    """(name, compiler flags) for the vector instructions torch found on this CPU (x86: AVX-512 or AVX2 + FMA)."""
    import platform

    import torch

    cap = torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else "DEFAULT"
    if platform.machine().lower() in ("x86_64", "amd64"):
        if cap.startswith("AVX512"):
            return "avx512", ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mavx2", "-mfma"]
        if cap == "AVX2":
            return "avx2", ["-mavx2", "-mfma"]
    return "generic", []


def fused_available() -> bool:
    return hash_kernel() is not None


def reset_for_tests(value: Optional[object] = None) -> None:
    """Forget (or set) the cached module; tests use it to exercise the fallback."""
    global _module
    _module = value
