"""``olmo model``: create a freshly initialized checkpoint, or describe a model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from olmo_nn.model.config import PRESETS, TransformerConfig, preset


def register(commands: Any) -> None:
    """Add ``olmo model init`` and ``olmo model show``."""
    parser = commands.add_parser("model", help="create or describe models")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    init = verbs.add_parser("init", help="write a randomly initialized unsharded checkpoint")
    _add_config_arguments(init)
    init.add_argument(
        "--output", type=Path, help="checkpoint folder to create (required unless --dry-run)"
    )
    init.add_argument(
        "--seed", type=int, default=0, help="seed for the initial weights (default 0)"
    )
    init.add_argument(
        "--overwrite", action="store_true", help="replace an existing checkpoint folder"
    )
    init.add_argument(
        "--dry-run", action="store_true", help="print the resolved config and sizes only"
    )
    init.set_defaults(func=_init)

    show = verbs.add_parser("show", help="print a model's config, parameter count and FLOPs/token")
    _add_config_arguments(show)
    show.add_argument(
        "--checkpoint", type=Path, help="describe this checkpoint instead of a preset"
    )
    show.set_defaults(func=_show)


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        default="tiny",
        help=f"model preset ({', '.join(PRESETS)}; add -olmo2 for OLMo 2's block). Default tiny.",
    )
    parser.add_argument("--config", type=Path, help="a model config YAML file (overrides --preset)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. n_layers=4"
    )


def _resolve(args: argparse.Namespace) -> TransformerConfig:
    config = TransformerConfig.load(args.config) if args.config else preset(args.preset)
    return config.with_overrides(args.overrides)


def _describe(config: TransformerConfig) -> str:
    return (
        config.to_yaml()
        + f"# parameters: {config.num_params():,} "
        + f"(non-embedding {config.num_params(include_embedding=False):,})\n"
        + f"# training FLOPs per token at seq {config.max_sequence_length}: "
        + f"{config.num_flops_per_token():,}\n"
    )


def _init(args: argparse.Namespace) -> int:
    config = _resolve(args)
    print(_describe(config), end="")
    if args.dry_run:
        return 0
    if args.output is None:
        raise ValueError(
            "--output is required (the checkpoint folder to create), or pass --dry-run"
        )
    from olmo_nn.checkpoint import save_checkpoint
    from olmo_nn.model import OLMo

    if args.output.exists() and not args.overwrite:
        raise ValueError(f"{args.output} already exists; pass --overwrite to replace it")
    model = OLMo(config, init_device="meta")
    model.to_empty(device="cpu")
    model.init_weights(seed=args.seed)
    save_checkpoint(model, args.output, config={"init_seed": args.seed}, overwrite=args.overwrite)
    print(f"wrote {args.output}")
    return 0


def _show(args: argparse.Namespace) -> int:
    if args.checkpoint is not None:
        from olmo_nn.checkpoint import load_checkpoint_config

        config, _ = load_checkpoint_config(args.checkpoint)
        config = config.with_overrides(args.overrides)
    else:
        config = _resolve(args)
    print(_describe(config), end="")
    return 0
