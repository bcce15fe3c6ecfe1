"""Tokenizer files in a Hugging Face folder: written on export, copied on import.

The export writes ``tokenizer.json`` as-is with a ``tokenizer_config.json`` naming the generic
``PreTrainedTokenizerFast`` class, so ``AutoTokenizer.from_pretrained`` runs exactly the
pipeline in the JSON (transformers 4 and 5 alike) and adds no BOS/EOS, like our tokenizer.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from olmo_nn.model.config import TransformerConfig
from olmo_nn.tokenizer import Tokenizer

__all__ = [
    "TOKENIZER_FILES",
    "copy_tokenizer_files",
    "resolve_export_tokenizer",
    "write_tokenizer_files",
]

#: Tokenizer files an import carries over into the checkpoint folder when present.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
)


def resolve_export_tokenizer(
    name_or_path: str | os.PathLike[str] | None, checkpoint_dir: Path, config: TransformerConfig
) -> Tokenizer | None:
    """The tokenizer to ship: the given one; else the checkpoint's own ``tokenizer.json``;
    else OLMo's when the vocabulary size matches it; else None (with a warning)."""
    # Only the JSON and the token ids are needed: skip compiling the fast encoding engine.
    if name_or_path is not None:
        tokenizer = Tokenizer.from_name_or_path(name_or_path, engine="tokenizers")
    elif (checkpoint_dir / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_name_or_path(checkpoint_dir, engine="tokenizers")
    else:
        tokenizer = Tokenizer.from_name_or_path(engine="tokenizers")
        if tokenizer.vocab_size != config.vocab_size:
            warnings.warn(
                f"no tokenizer given and {checkpoint_dir} has no tokenizer.json; OLMo's tokenizer "
                f"({tokenizer.vocab_size} tokens) does not match vocab_size={config.vocab_size}, "
                "so no tokenizer files are written (pass --tokenizer to include one)",
                stacklevel=3,
            )
            return None
    if tokenizer.vocab_size > config.padded_vocab_size:
        raise ValueError(
            f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} tokens but the model has only "
            f"{config.padded_vocab_size} embedding rows; pass the tokenizer the model was trained with"
        )
    if tokenizer.vocab_size != config.vocab_size:
        warnings.warn(
            f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} tokens but the model config "
            f"says vocab_size={config.vocab_size}",
            stacklevel=3,
        )
    return tokenizer


def _token_contents(tokenizer: Tokenizer) -> dict[int, str]:
    spec = json.loads(tokenizer.json_text)
    contents = {int(t["id"]): str(t["content"]) for t in spec.get("added_tokens", [])}
    vocab = spec.get("model", {}).get("vocab", {})
    if isinstance(vocab, dict):
        for content, token_id in vocab.items():
            contents.setdefault(int(token_id), content)
    return contents


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_tokenizer_files(
    tokenizer: Tokenizer, folder: Path, config: TransformerConfig
) -> list[Path]:
    """``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` in ``folder``.

    The special tokens are the model config's eos/pad ids (the ids it was trained with).
    """
    for role, ours, theirs in (
        ("eos", config.eos_token_id, tokenizer.eos_token_id),
        ("pad", config.pad_token_id, tokenizer.pad_token_id),
    ):
        if theirs is not None and theirs != ours:
            warnings.warn(
                f"tokenizer {tokenizer.name!r} has {role}_token_id={theirs} but the model config "
                f"has {ours}; the exported files use the model config's",
                stacklevel=3,
            )
    contents = _token_contents(tokenizer)
    special: dict[str, str] = {}
    for role, token_id in (
        ("bos_token", tokenizer.bos_token_id),
        ("eos_token", config.eos_token_id),
        ("pad_token", config.pad_token_id),
    ):
        if token_id is not None and token_id in contents:
            special[role] = contents[token_id]
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "unk_token": None,
        **special,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": config.max_sequence_length,
    }
    paths = [
        tokenizer.save(folder),
        folder / "tokenizer_config.json",
        folder / "special_tokens_map.json",
    ]
    _write_json(paths[1], tokenizer_config)
    _write_json(paths[2], special)
    return paths


def copy_tokenizer_files(source: Path, destination: Path) -> list[Path]:
    """Copy the :data:`TOKENIZER_FILES` that ``source`` has into ``destination``."""
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            copied.append(Path(shutil.copy2(source / name, destination / name)))
    return copied
