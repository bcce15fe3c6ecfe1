"""The ``olmo`` command line: one verb per job, each registered by its own module."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence

from olmo_nn.cli import batch, checkpoint, data, evaluation, hf, model, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="olmo",
        description="An open, reproducible language-model lab: data, training, evaluation.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups = {"data": data.register(commands)}
    for module in (model, train, checkpoint, batch, evaluation, hf):
        module.register(commands)
    # Other packages (the curation library) add commands through the "olmo.commands" entry
    # point group: ``register(commands, groups)``; olmo_nn never imports them itself.
    for entry_point in sorted(
        importlib.metadata.entry_points(group="olmo.commands"), key=lambda e: e.name
    ):
        entry_point.load()(commands, groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``olmo`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        # User mistakes: say what was wrong and how to fix it, without a traceback.
        print(f"olmo {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
