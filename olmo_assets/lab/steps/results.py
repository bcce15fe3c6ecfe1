"""What a step and a check return, and the small formatting helpers every step shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olmo_assets.lab.params import Lab

__all__ = ["CheckResult", "InputError", "Rows", "StepResult", "relative", "user_error"]

Rows = list[dict[str, Any]]
"""A table: one dict per row; the columns are the keys, in first-seen order."""


class InputError(ValueError):
    """A stage cannot run on what it was given (a missing or empty input, an unknown source):
    the message says what is wrong and how to fix it, so no traceback is needed."""


def user_error(error: BaseException) -> bool:
    """A mistake the user can fix from the message alone (no traceback needed); anything
    else is a bug."""
    from olmo_assets.curation.external import SourceError
    from olmo_nn.config import ConfigError

    return isinstance(error, FileNotFoundError | InputError | ConfigError | SourceError)


@dataclass
class StepResult:
    """What a step reports about the artifacts it wrote (the folders are declared, not returned)."""

    metadata: dict[str, Any] = field(default_factory=dict)
    """Numbers and short strings, shown on the step's first artifact."""
    tables: dict[str, Rows] = field(default_factory=dict)
    """Tables, shown in full (every column) on the step's first artifact."""
    images: dict[str, Path] = field(default_factory=dict)
    """Plots (PNG)."""


@dataclass
class CheckResult:
    """The verdict of one check over what a step wrote, and what it found."""

    passed: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Rows] = field(default_factory=dict)
    """What it found, row by row: the flagged examples (a few) or the counts it compared."""


def relative(lab: Lab, path: Path) -> str:
    """A path relative to the repository: results name files the same in any checkout."""
    return path.resolve().relative_to(lab.repo.resolve()).as_posix()
