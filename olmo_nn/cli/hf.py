"""`olmo export-hf` and `olmo import-hf`: our checkpoints <-> Hugging Face model folders."""

from __future__ import annotations

import argparse
from typing import Any

# Kept here (not imported from olmo_nn.hf) so `olmo --help` does not import torch.
_DTYPE_CHOICES = ("bfloat16", "float32")


def _export(args: argparse.Namespace) -> int:
    from olmo_nn.hf.convert import export_hf

    out = export_hf(
        args.checkpoint,
        args.out_dir,
        tokenizer=args.tokenizer,
        dtype=args.dtype,
        overwrite=args.overwrite,
    )
    print(f"wrote Hugging Face model folder {out}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from olmo_nn.hf.convert import import_hf

    out = import_hf(args.hf_dir, args.out_checkpoint, overwrite=args.overwrite)
    print(f"wrote checkpoint {out}")
    return 0


def register(commands: Any) -> None:
    """Add ``export-hf`` and ``import-hf`` to the `olmo` parser."""
    export = commands.add_parser(
        "export-hf",
        help="write a checkpoint as a Hugging Face folder (OlmoForCausalLM / Olmo2ForCausalLM)",
        description=(
            "Write an unsharded checkpoint as a folder that transformers' "
            "AutoModelForCausalLM and AutoTokenizer load offline."
        ),
    )
    export.add_argument("checkpoint", metavar="CHECKPOINT", help="unsharded checkpoint folder")
    export.add_argument("out_dir", metavar="OUT_DIR", help="Hugging Face folder to write")
    export.add_argument(
        "--tokenizer",
        metavar="NAME_OR_PATH",
        default=None,
        help="tokenizer to ship (name, tokenizer.json or its folder); default: the checkpoint's "
        "tokenizer.json, else OLMo's when the vocabulary size matches",
    )
    export.add_argument(
        "--dtype",
        choices=_DTYPE_CHOICES,
        default=None,
        help="dtype of the saved weights (default: the checkpoint's)",
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace OUT_DIR if it exists and is not empty"
    )
    export.set_defaults(func=_export)

    imp = commands.add_parser(
        "import-hf",
        help="convert a Hugging Face OLMo / OLMo 2 folder into a checkpoint",
        description=(
            "Read a Hugging Face OlmoForCausalLM / Olmo2ForCausalLM folder (config.json and "
            "safetensors weights; pickles are refused) into an unsharded checkpoint, copying its "
            "tokenizer files alongside."
        ),
    )
    imp.add_argument("hf_dir", metavar="HF_DIR", help="Hugging Face model folder")
    imp.add_argument("out_checkpoint", metavar="OUT_CHECKPOINT", help="checkpoint folder to write")
    imp.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT_CHECKPOINT if it exists and is not empty",
    )
    imp.set_defaults(func=_import)
