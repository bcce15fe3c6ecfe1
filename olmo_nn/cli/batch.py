"""``olmo batch RUN_DIR --step N``: which instances and documents formed a training step."""

from __future__ import annotations

import argparse
import json
from typing import Any

from olmo_nn.cli.arguments import int_at_least
from olmo_nn.train.batch import format_batch, reconstruct_batch


def register(commands: Any) -> None:
    """Add ``olmo batch`` to the ``olmo`` parser."""
    parser = commands.add_parser(
        "batch",
        help="reconstruct a training step's global batch down to its source documents",
        description=(
            "Reconstruct global batch N of a training run from its directory (config.yaml, "
            "data_order/, metrics.jsonl): the instance indices, the batch fingerprint "
            "recomputed from the token shards (compared with the one the run logged), and the "
            "documents in each instance with their token spans. Exit code 1 when the "
            "fingerprint differs from the logged one."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the training run's directory")
    parser.add_argument(
        "--step",
        type=int,
        required=True,
        metavar="N",
        help="optimizer step, numbered from 1 as in metrics.jsonl",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the whole batch as one JSON object"
    )
    parser.add_argument(
        "--limit",
        type=int_at_least(0),
        default=16,
        metavar="N",
        help="instances shown in the table (default %(default)s; 0: all); --json lists all",
    )
    parser.set_defaults(func=run_batch)


def run_batch(args: argparse.Namespace) -> int:
    """Handler of ``olmo batch``: 0, or 1 when the fingerprint contradicts metrics.jsonl."""
    batch = reconstruct_batch(args.run_dir, args.step)
    if args.json:
        print(json.dumps(batch.to_json()))
    else:
        print(format_batch(batch, max_instances=args.limit))
    return 1 if batch.matches is False else 0
