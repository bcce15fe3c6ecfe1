"""Tokenization steps: the tokenizer, OLMo token shards of the curated corpus; their check."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from olmo_assets.lab.params import Lab
from olmo_assets.lab.steps.results import CheckResult, StepResult
from olmo_nn.atomic import staged_folder

__all__ = [
    "SPLITS",
    "SUMMARY_FILE",
    "save_tokenizer",
    "shards_readable",
    "split_folders",
    "tokenize",
]

#: A source shard's token-shard folders (``lab/shards/<source>/<shard>/<split>``).
SPLITS = ("train", "validation")
#: What a source shard's tokenization wrote: tokens and documents per split.
SUMMARY_FILE = "summary.json"


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


def tokenize(lab: Lab, source: str, shard: str) -> StepResult:
    """OLMo token shards of one source shard: its kept documents (``train/``) and its
    validation split (``validation/``), read from the files the mix's manifest of the shard
    names. A shard the mix kept nothing of gets no split folders, only ``summary.json``."""
    from olmo_nn.data import tokenize_documents
    from olmo_nn.tokenizer import Tokenizer

    manifest_path = lab.curated_shard(source, shard)
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{manifest_path} does not exist: the mix wrote no manifest of shard {shard} of "
            f"{source!r} (the shard was planned after the mix ran, or the mix did not finish); "
            "materialize curated_corpus (the mix) first"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    tokenizer = Tokenizer.from_name_or_path(lab.tokenizer_dir)
    output = lab.token_shards(source, shard)
    output.parent.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {}
    with staged_folder(output) as staged:
        staged.mkdir()
        for split in SPLITS:
            files = [lab.curated / entry["path"] for entry in manifest["files"][split]]
            if not files:
                continue
            summary = tokenize_documents(
                files, staged / split, tokenizer=tokenizer, workers=lab.params.workers
            )
            counts[split] = {
                "tokens": summary.num_tokens,
                "documents": summary.num_documents,
                "rejected": summary.num_errors,
            }
        summary_text = json.dumps({"source": source, "shard": shard, "splits": counts}, indent=1)
        (staged / SUMMARY_FILE).write_text(summary_text + "\n", encoding="utf-8")
    train = counts.get("train", {"tokens": 0, "documents": 0})
    return StepResult(
        {
            "tokens": train["tokens"],
            "documents": train["documents"],
            "validation_tokens": counts.get("validation", {}).get("tokens", 0),
            "rejected": sum(c["rejected"] for c in counts.values()),
        },
        {"splits": [{"split": split} | c for split, c in counts.items()]},
    )


def split_folders(lab: Lab, split: str) -> list[Path]:
    """Every source shard's token-shard folder of ``split`` (``train``, ``validation``), in
    the order of the sources and their shards; a shard with nothing in the split has none.
    A shard not tokenized yet is an error that says how to tokenize it."""
    from olmo_assets.lab.pipeline import StageRun, stage_named

    folders = []
    for source in lab.params.sources:
        for shard in lab.source_shards(source):
            summary = lab.token_shards(source, shard) / SUMMARY_FILE
            if not summary.is_file():
                name = StageRun(stage_named("tokenize"), (source, shard)).dvc_name
                raise FileNotFoundError(
                    f"{summary.parent} holds no token shards: materialize token_shards/{source} "
                    f"partition {shard} first (or `dvc repro {name}`)"
                )
            if split in json.loads(summary.read_text(encoding="utf-8"))["splits"]:
                folders.append(summary.parent / split)
    return folders


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


def shards_readable(lab: Lab, source: str, shard: str) -> CheckResult:
    """Every shard file of one source shard re-read: its size, hash and ids against the
    manifest; the index's spans tile each file, end in EOS, and add up to the manifest's
    token count. The splits are those the summary names, with the counts it names."""
    folder = lab.token_shards(source, shard)
    problems: list[str] = []
    summary_path = folder / SUMMARY_FILE
    counts = (
        json.loads(summary_path.read_text(encoding="utf-8"))["splits"]
        if summary_path.is_file()
        else {}
    )
    if not summary_path.is_file():
        problems.append(f"no {SUMMARY_FILE}")
    present = [split for split in SPLITS if (folder / split).exists()]
    if sorted(present) != sorted(counts):
        problems.append(f"split folders {present} differ from the summary's {sorted(counts)}")
    for split in present:
        found = _check_split(folder / split)
        problems += found
        manifest = folder / split / "manifest.json"
        if not found and split in counts:
            written = json.loads(manifest.read_text(encoding="utf-8"))
            if (written["num_tokens"], written["num_documents"]) != (
                counts[split]["tokens"],
                counts[split]["documents"],
            ):
                problems.append(f"{split}: the manifest's counts differ from the summary's")
    return CheckResult(
        not problems,
        {"splits": ", ".join(present) or "none", "problems": "; ".join(problems[:10]) or "none"},
    )
