"""One training run per run directory: an exclusive ``flock`` held for the whole run.

The lock file ``RUN_DIR/.lock`` holds the holder's pid (for the refusal's message) and is
removed when the run ends, so a finished run directory holds no trace of it. The kernel
releases the lock of a killed process, so a crash never leaves the directory locked.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LOCK_FILE", "RunDirectoryInUse", "run_directory_lock"]

LOCK_FILE = ".lock"


class RunDirectoryInUse(ValueError):
    """Another process holds the run directory."""


@contextmanager
def run_directory_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` exclusively, or raise :class:`RunDirectoryInUse` naming the holder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    while True:
        handle = path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunDirectoryInUse(
                f"{run_dir} is in use by another `olmo train` (pid {holder}); two runs must "
                "not write one run directory: wait for it to end, or stop it"
            ) from None
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break  # not a file its last holder removed while we opened it
        except FileNotFoundError:
            pass
        handle.close()
    try:
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()
