"""Placeholder: `olmo` subcommands for hf."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    """Add this module's subcommands to the `olmo` parser."""
    del commands
