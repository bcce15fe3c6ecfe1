"""The git commit of the lab's code, as runs and materializations record it."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import olmo_assets

__all__ = ["code_commit"]


@functools.cache
def code_commit() -> tuple[str, bool] | None:
    """The commit the lab's code is at and whether tracked files have changes since (None
    outside a git checkout); asked of git once per process (a stage records it twice)."""
    code = Path(olmo_assets.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(code), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        status = subprocess.run(
            ["git", "-C", str(code), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return commit, bool(status.strip())
