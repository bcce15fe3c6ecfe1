"""``olmo train``: run (or resume) a training run from a config file."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from olmo_nn.cli.arguments import int_at_least


def register(commands: Any) -> None:
    """Add ``olmo train``."""
    parser = commands.add_parser(
        "train",
        help="train a model (single process, or under torchrun)",
        description=(
            "Train from CONFIG.yaml. Started again on the same run directory it resumes from the "
            "latest checkpoint. Under torchrun every rank runs this same command. Creating "
            "RUN_DIR/stop-request asks a running trainer to save a checkpoint at its next "
            "log_interval step (or checkpoint or evaluation step, if sooner) and exit with "
            "status 75 (resumable)."
        ),
    )
    parser.add_argument(
        "config", type=Path, metavar="CONFIG.yaml", help="training config (see configs/)"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="overrides, e.g. optim.lr=3e-4 (before or after the options)",
    )
    parser.add_argument("--run-dir", type=Path, help="run directory (default: runs/RUN_NAME)")
    parser.add_argument(
        "--stop-at",
        type=int_at_least(1),
        metavar="STEP",
        help="end after this step, saving a checkpoint, without changing the schedule",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the resolved config and derived numbers"
    )
    parser.set_defaults(func=_train)
    _take_overrides_anywhere(parser)


def _take_overrides_anywhere(parser: argparse.ArgumentParser) -> None:
    """Accept KEY=VALUE after the options too (argparse takes positionals in one run only)."""

    def parse_known_args(
        args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = argparse.ArgumentParser.parse_known_args(parser, args, namespace)
        late = [arg for arg in extras if "=" in arg and not arg.startswith("-")]
        parsed.overrides = [*parsed.overrides, *late]
        return parsed, [arg for arg in extras if arg not in late]

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign,assignment]


def _describe(config: Any, world_size: int) -> str:
    seq = config.sequence_length
    accumulation = config.accumulation_steps(world_size)
    tokens_per_step = config.global_batch_size * seq
    lines = [
        f"# world size: {world_size}",
        f"# instances per step: {config.global_batch_size} x {seq} tokens = {tokens_per_step:,} tokens",
        f"# micro-batch per device: {config.micro_batch_size}; gradient accumulation: {accumulation}",
        f"# total tokens: {tokens_per_step * config.max_steps:,} over {config.max_steps:,} steps",
        f"# parameters: {config.model.num_params():,}",
        f"# training FLOPs per token: {config.model.num_flops_per_token(seq):,}",
    ]
    if config.batch_size_warmup is not None:
        warmup = config.batch_size_warmup
        lines.append(
            f"# batch-size warmup: from {warmup.start_instances} instances, doubling every "
            f"{warmup.doubling_tokens:,} tokens up to {config.global_batch_size}"
        )
    return "\n".join(lines)


def _train(args: argparse.Namespace) -> int:
    import os

    from olmo_nn.train.config import TrainConfig

    config = TrainConfig.load(args.config).with_overrides(args.overrides).resolved()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if args.dry_run:
        print(config.to_yaml() + _describe(config, world_size))
        return 0
    config.accumulation_steps(world_size)  # fail at start on impossible batch arithmetic
    from olmo_nn.train.checkpointing import DiskFullError
    from olmo_nn.train.run import run_training

    run_dir = args.run_dir or Path("runs") / config.run_name
    from olmo_nn.train.stop import STOPPED_EXIT

    try:
        trainer = run_training(config, run_dir, stop_at=args.stop_at)
    except DiskFullError as error:  # not a traceback: the message says what to do
        print(f"olmo train: error: {error}", file=sys.stderr)
        return 1
    return STOPPED_EXIT if trainer.stopped_on_request is not None else 0
