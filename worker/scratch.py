"""Per-worker scratch space that survives nothing: a unique locked folder, swept when its owner is gone.

Folders are named by ``mkdtemp`` (never by PID: containers reuse PIDs and
hosts share mounts). Each has a lock file beside it, ``{folder}.lock``, held
with ``flock`` for the worker's life: the kernel drops the lock when the
process dies however it dies, so a start-up sweep removes exactly the folders
whose lock it can take.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

PREFIX = "vidworker-"
STRAY_SECONDS = 300.0
"""A folder without a lock file older than this is a leftover (its owner died between the two steps)."""


class Scratch:
    """``with Scratch(tmp_dir) as folder:`` a fresh locked folder, removed (with its lock) on exit."""

    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = tmp_dir
        self.path: Path | None = None
        self._lock: int | None = None

    def __enter__(self) -> Path:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        sweep(self.tmp_dir)
        handle, lock = tempfile.mkstemp(prefix=PREFIX, suffix=".lock", dir=self.tmp_dir)
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock = handle
        self.path = Path(lock).with_suffix("")
        self.path.mkdir(mode=0o700)
        return self.path

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path.with_suffix(".lock").unlink(missing_ok=True)
        if self._lock is not None:
            os.close(self._lock)


def sweep(tmp_dir: Path) -> list[Path]:
    """Remove the scratch folders of workers that are gone; returns what was removed."""
    removed = []
    for lock in tmp_dir.glob(f"{PREFIX}*.lock"):
        if _unowned(lock):
            folder = lock.with_suffix("")
            log.warning("removing %s, left by a worker that is gone", folder)
            shutil.rmtree(folder, ignore_errors=True)
            lock.unlink(missing_ok=True)
            removed.append(folder)
    for folder in [*tmp_dir.glob(f"{PREFIX}*"), *tmp_dir.glob("worker-*")]:
        stray = folder.is_dir() and not folder.with_suffix(".lock").exists()
        if stray and time.time() - folder.stat().st_mtime > STRAY_SECONDS:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _unowned(lock: Path) -> bool:
    """True when nobody holds ``lock`` (we could take it; it is released again at once)."""
    try:
        handle = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.close(handle)
    return True
