"""``olmo checkpoint unshard``: a sharded checkpoint as an unsharded one, offline."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    """Add ``olmo checkpoint unshard``."""
    parser = commands.add_parser("checkpoint", help="convert training checkpoints")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    unshard = verbs.add_parser(
        "unshard",
        help="write a sharded checkpoint's weights as an unsharded checkpoint",
        description=(
            "Read a sharded (torch.distributed.checkpoint) checkpoint, written by any number "
            "of processes, in this one process and write the unsharded checkpoint the trainer "
            "writes (model.safetensors, config.yaml, train_state.json, SHA256SUMS): what "
            "`olmo eval`, `olmo hf export` and the lab read. The optimizer state stays in "
            "the sharded checkpoint. Needs the whole model in memory (fp32)."
        ),
    )
    unshard.add_argument(
        "checkpoint", type=Path, metavar="RUN_DIR/checkpoints/stepN", help="sharded checkpoint"
    )
    unshard.add_argument(
        "--output",
        type=Path,
        help="folder to create (default: the trainer's name for it, stepN-unsharded beside it)",
    )
    unshard.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    unshard.set_defaults(func=_unshard)


def _unshard(args: argparse.Namespace) -> int:
    from olmo_nn.train.checkpointing import unshard

    checkpoint: Path = args.checkpoint
    if not (checkpoint / ".metadata").is_file():
        raise FileNotFoundError(
            f"{checkpoint} is not a sharded checkpoint (no .metadata in it): pass a folder "
            "such as RUN_DIR/checkpoints/step000100"
        )
    target = args.output or checkpoint.with_name(f"{checkpoint.name}-unsharded")
    if target.exists() and not args.overwrite:
        raise FileExistsError(f"{target} already exists; pass --overwrite to replace it")
    print(f"wrote {unshard(checkpoint, args.output, overwrite=args.overwrite)}")
    return 0
