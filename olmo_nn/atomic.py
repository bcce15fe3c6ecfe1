"""Atomic writes: an output folder appears complete or not at all.

A crash or SIGKILL while writing leaves either the previous folder or nothing, never a
half-written folder under the final name.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["staged_folder"]


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yield a not-yet-created path beside ``target`` that replaces it when the block succeeds.

    The caller creates and fills the yielded path. On success it is renamed to ``target``
    (an existing ``target`` is moved aside first and restored if the rename fails); on any
    exception the staged files are removed and ``target`` is untouched.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    workspace = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
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
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
