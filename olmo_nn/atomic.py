"""Atomic writes: an output folder appears complete or not at all.

A crash or SIGKILL while writing leaves either the previous folder or nothing, never a
half-written folder under the final name. What a killed writer leaves beside it (a
:func:`scratch_folder`, a :func:`temporary_name` file) is removed by the next writer there,
once no live process holds it.
"""

from __future__ import annotations

import fcntl
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "remove_dead_temporaries",
    "scratch_folder",
    "staged_folder",
    "temporary_name",
]

#: In a workspace: locked (``flock``) by the process using it, for as long as it lives.
_LOCK = ".lock"
_TEMPORARY = re.compile(r"\..+\.tmp-(\d+)")


def _remove_abandoned_workspaces(target: Path) -> None:
    """Remove the workspaces beside ``target`` that no live process holds (killed writers')."""
    for workspace in target.parent.glob(f".{glob.escape(target.name)}.*"):
        try:
            handle = (workspace / _LOCK).open("rb")
        except OSError:  # not a workspace, or one being set up
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # in use
                continue
            shutil.rmtree(workspace, ignore_errors=True)


@contextmanager
def scratch_folder(target: Path) -> Iterator[Path]:
    """A private folder beside ``target`` (same file system), removed on exit.

    It is locked while in use: a killed process's is removed when the next
    ``scratch_folder(target)`` or ``staged_folder(target)`` starts.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_workspaces(target)
    workspace = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    # Locked before it gets its name: another writer's clean-up only looks at workspaces
    # whose lock file exists, so it never finds this one unlocked.
    with (workspace / f"{_LOCK}.new").open("wb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (workspace / f"{_LOCK}.new").rename(workspace / _LOCK)
        try:
            yield workspace
        finally:
            shutil.rmtree(workspace, ignore_errors=True)


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yield a not-yet-created path beside ``target`` that replaces it when the block succeeds.

    The caller creates and fills the yielded path (in a :func:`scratch_folder`). On success it
    is renamed to ``target`` (an existing ``target`` is moved aside first and restored if the
    rename fails); on any exception the staged files are removed and ``target`` is untouched.
    """
    with scratch_folder(target) as workspace:
        staged = workspace / "staged"
        yield staged
        if not target.exists():
            staged.rename(target)
            return
        replaced = workspace / "replaced"
        target.rename(replaced)
        try:
            staged.rename(target)
        except BaseException:
            replaced.rename(target)
            raise


def temporary_name(path: Path) -> Path:
    """The name ``path`` is written under before it is renamed into place: hidden, and
    tagged with this process's id (see :func:`remove_dead_temporaries`)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_dead_temporaries(folder: Path) -> None:
    """Remove the :func:`temporary_name` files in ``folder`` whose process is not alive."""
    for path in folder.glob(".*.tmp-*"):
        match = _TEMPORARY.fullmatch(path.name)
        if match and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
