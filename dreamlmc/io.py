"""Atomic file writes: a reader (or a crash, or a SIGKILL) never sees a half-written file; a failed write (disk full,
I/O error) leaves the previous file untouched and is one DreamlmcError line, not a traceback."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from dreamlmc.errors import DreamlmcError


def atomic_write(path: Path, write: Callable[[Path], None], what: str = "") -> None:
    """Call write(tmp_path) on a temporary file in the same folder, flush it to disk, then rename it over path.

    OSError (ENOSPC, EIO, permissions) becomes a DreamlmcError naming the file; `what` adds what the user can do."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
        os.close(fd)
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        with open(tmp, "rb") as f:  # on disk before the rename: a crash leaves the old file or the new, whole
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise DreamlmcError(f"could not write {path} ({reason}); the previous version, if any, is intact"
                            + (f"; {what}" if what else "")) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


class RunLock:
    """One writer per run folder: an exclusive fcntl lock on RUN/.lock for as long as the context is open.

    A second writer gets a one-line DreamlmcError naming the holder's pid. The kernel releases the lock when its
    process dies (even by SIGKILL), so a lock file left behind by a dead process is simply taken over."""

    NAME = ".lock"

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / self.NAME
        self.fd = None

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # not a POSIX system: no locking
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise DreamlmcError(f"cannot lock {self.path.parent} ({e.strerror})")
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(self.fd, 32).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            self.fd = None
            raise DreamlmcError(f"{self.path.parent} is being written by another dreamlmc process (pid {holder}); "
                                "wait for it to finish or stop it")
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock
            self.fd = None

    @staticmethod
    def held_by_other(run_dir: Path) -> bool:
        """Whether another live process holds RUN's lock (without taking it)."""
        try:
            with RunLock(run_dir):
                return False
        except DreamlmcError:
            return True
