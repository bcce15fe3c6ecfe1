"""Tokenization steps: the tokenizer, OLMo token shards of the curated corpus; their check."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from olmo_assets.lab.params import Lab
from olmo_assets.lab.steps.results import CheckResult, InputError, StepResult
from olmo_nn.atomic import staged_folder

__all__ = ["SPLITS", "save_tokenizer", "shards_readable", "tokenize"]

#: Shard folders under ``lab/shards`` and the curated folders they are made from.
SPLITS = {"train": "documents", "validation": "validation"}


def save_tokenizer(lab: Lab) -> StepResult:
    """The tokenizer the shards are made with (``params.tokenizer``), as ``tokenizer.json``."""
    from olmo_nn.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_name_or_path(lab.params.tokenizer)
    with staged_folder(lab.tokenizer_dir) as staged:
        staged.mkdir()
        tokenizer.save(staged)
    return StepResult(
        {
            "name": tokenizer.name,
            "vocab_size": tokenizer.vocab_size,
            "eos_token_id": tokenizer.eos_token_id or -1,
            "fingerprint": tokenizer.fingerprint,
        }
    )


def tokenize(lab: Lab) -> StepResult:
    """OLMo token shards of the kept documents (``train/``) and of the validation splits."""
    from olmo_nn.data import TokenShards, tokenize_documents
    from olmo_nn.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_name_or_path(lab.tokenizer_dir)
    rows = []
    with staged_folder(lab.shards) as staged:
        staged.mkdir()
        for split, folder in SPLITS.items():
            inputs = lab.curated / folder
            if not inputs.is_dir() or not any(inputs.rglob("*.jsonl.gz")):
                if split == "train":
                    raise InputError(f"{inputs} holds no kept documents: nothing to train on")
                continue
            summary = tokenize_documents(
                [inputs], staged / split, tokenizer=tokenizer, workers=lab.params.workers
            )
            for source, counts in sorted(summary.sources.items()):
                rows.append({"split": split, "source": source} | counts)
    train = TokenShards(lab.shards / "train")
    return StepResult(
        {
            "tokens": train.num_tokens,
            "documents": train.num_documents,
            "tokens_per_source": {
                r["source"]: r.get("num_tokens", 0) for r in rows if r["split"] == "train"
            },
        },
        {"tokens_by_source": rows},
    )


def _check_split(folder: Path) -> list[str]:
    """What is wrong with one shard folder, read byte by byte against its manifest and index
    (no memmap: a short file is a finding, not an exception)."""
    import numpy as np
    import pyarrow.parquet as pq

    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return [f"{folder.name}: no manifest.json"]
    manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
    dtype = np.dtype(manifest["dtype"]).newbyteorder("<")
    vocab, eos = manifest["tokenizer"]["vocab_size"], manifest["tokenizer"]["eos_token_id"]
    index_path = folder / manifest.get("index", "index.parquet")
    if not index_path.is_file():
        return [f"{folder.name}: no {index_path.name}"]
    index = pq.read_table(index_path).to_pydict()
    problems = []
    for entry in manifest["files"]:
        name, path = entry["path"], folder / entry["path"]
        if not path.is_file():
            problems.append(f"{folder.name}/{name}: missing")
            continue
        data = path.read_bytes()
        if len(data) % dtype.itemsize:
            problems.append(f"{folder.name}/{name}: {len(data)} bytes, not whole tokens")
            continue
        tokens = np.frombuffer(data, dtype=dtype)
        if len(tokens) != entry["num_tokens"]:
            problems.append(
                f"{folder.name}/{name}: {len(tokens)} tokens, manifest says {entry['num_tokens']}"
            )
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            problems.append(f"{folder.name}/{name}: sha256 differs from the manifest")
        if len(tokens) and int(tokens.max()) >= vocab:
            problems.append(f"{folder.name}/{name}: token id {int(tokens.max())} >= vocab {vocab}")
        spans = [
            (start, end)
            for file, start, end in zip(index["file"], index["start"], index["end"], strict=True)
            if file == name
        ]
        expected_start = 0
        for start, end in spans:
            if start != expected_start or not start < end <= len(tokens):
                problems.append(f"{folder.name}/{name}: index span [{start}, {end}) out of place")
                break
            if tokens[end - 1] != eos:
                problems.append(f"{folder.name}/{name}: document [{start}, {end}) lacks EOS")
                break
            expected_start = end
        else:
            if expected_start != len(tokens):
                problems.append(
                    f"{folder.name}/{name}: the index covers {expected_start} of {len(tokens)} "
                    "tokens"
                )
    if len(index["file"]) != manifest["num_documents"]:
        problems.append(
            f"{folder.name}: index has {len(index['file'])} documents, manifest says "
            f"{manifest['num_documents']}"
        )
    indexed = sum(end - start for start, end in zip(index["start"], index["end"], strict=True))
    if indexed != manifest["num_tokens"]:
        problems.append(
            f"{folder.name}: index spans {indexed} tokens, manifest says {manifest['num_tokens']}"
        )
    return problems


def shards_readable(lab: Lab) -> CheckResult:
    """Every shard file re-read: its size, hash and ids against the manifest; the index's
    spans tile each file, end in EOS, and add up to the manifest's token count."""
    problems: list[str] = []
    splits = [split for split in SPLITS if (lab.shards / split).exists()]
    if "train" not in splits:
        problems.append("train: missing")
    for split in splits:
        problems += _check_split(lab.shards / split)
    return CheckResult(
        not problems,
        {"splits": ", ".join(splits), "problems": "; ".join(problems[:10]) or "none"},
    )
