"""``olmo data``: build training data (``olmo data tokenize`` → OLMo token shards)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from olmo_nn.cli.arguments import int_at_least
from olmo_nn.data.shards import DEFAULT_MAX_TOKENS_PER_FILE
from olmo_nn.data.tokenize import (
    DEFAULT_BATCH_SIZE,
    ERRORS_NAME,
    TokenizeSummary,
    tokenize_documents,
)
from olmo_nn.data.workers import exit_on_sigterm


def register(commands: Any) -> Any:
    """Add ``olmo data`` and its subcommands; returns the ``data`` actions (plugins add more)."""
    data = commands.add_parser(
        "data",
        help="build training data from documents",
        description="Build training data: tokenize Dolma documents into OLMo token shards.",
    )
    actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    tokenize = actions.add_parser(
        "tokenize",
        help="tokenize Dolma documents into OLMo token shards",
        description=(
            "Tokenize Dolma-format documents (.jsonl, .json.gz/.jsonl.gz, .jsonl.zst/.json.zst, "
            ".parquet; files, folders or globs) into OLMo token shards: part-NNNNN.npy token "
            "files with Dolma's part-NNNNN.csv.gz metadata, index.parquet, manifest.json, and "
            f"{ERRORS_NAME} listing bad input records."
        ),
    )
    tokenize.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="document files, folders (read recursively) or globs",
    )
    tokenize.add_argument(
        "--output", "-o", required=True, metavar="DIR", help="folder to write the shards into"
    )
    tokenize.add_argument(
        "--tokenizer",
        default=None,
        metavar="NAME_OR_PATH",
        help="tokenizer name or tokenizer.json path (default: OLMo's, allenai/gpt-neox-olmo-dolma-v1_5)",
    )
    tokenize.add_argument(
        "--workers",
        type=int_at_least(1),
        default=os.cpu_count() or 1,
        metavar="N",
        help="worker processes that parse and encode (default: the number of CPUs, %(default)s); "
        "the output is the same for any N",
    )
    tokenize.add_argument(
        "--max-tokens-per-file",
        type=int_at_least(1),
        default=DEFAULT_MAX_TOKENS_PER_FILE,
        metavar="N",
        help="start a new token file once the next document would pass N tokens "
        "(documents are never split; default: %(default)s)",
    )
    tokenize.add_argument(
        "--source",
        default=None,
        metavar="NAME",
        help="source name for documents without a 'source' field (default: their file's parent folder)",
    )
    tokenize.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first bad input record (exit code 2, no output) instead of listing it "
        f"in {ERRORS_NAME}",
    )
    tokenize.add_argument(
        "--batch-size",
        type=int_at_least(1),
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help="documents read and encoded per batch (bounds memory; default: %(default)s)",
    )
    tokenize.add_argument(
        "--overwrite", action="store_true", help="replace a finished shard set already in --output"
    )
    tokenize.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar (shown on a terminal)"
    )
    tokenize.set_defaults(func=run_tokenize)
    return actions


def run_tokenize(args: argparse.Namespace) -> int:
    """Handler of ``olmo data tokenize``: tokenize, print the summary, return 0."""
    with exit_on_sigterm():
        summary = _tokenize(args)
    print(summary.format())
    return 0


def _tokenize(args: argparse.Namespace) -> TokenizeSummary:
    return tokenize_documents(
        args.inputs,
        args.output,
        tokenizer=args.tokenizer,
        workers=args.workers,
        max_tokens_per_file=args.max_tokens_per_file,
        source=args.source,
        strict=args.strict,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        progress=False if args.no_progress else None,
    )
