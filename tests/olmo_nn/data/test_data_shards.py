"""Token shards: exact bytes on disk, Dolma metadata, index, manifest, atomicity, reading back."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from olmo_nn.data import ShardWriter, TokenShards, token_dtype
from olmo_nn.data.shards import DocumentSpan
from olmo_nn.tokenizer import Tokenizer

EOS = 0


def _write_small(folder: Path, max_tokens_per_file: int = 8, **kwargs: object) -> None:
    """Documents A=[1,2,3] (4 tokens with EOS), B=[4,5] (3), C=[6..10] (6), D=[11] (2)."""
    with ShardWriter(
        folder,
        vocab_size=100,
        eos_token_id=EOS,
        tokenizer_name="toy",
        tokenizer_fingerprint="f" * 64,
        max_tokens_per_file=max_tokens_per_file,
        **kwargs,  # type: ignore[arg-type]
    ) as writer:
        writer.write([1, 2, 3], id="A", source="web", path="in/a.jsonl", line=1)
        writer.write(
            np.array([4, 5], dtype=np.uint32), id="B", source="web", path="in/a.jsonl", line=2
        )
        writer.write(range(6, 11), id="C", source="code", path="in/c.jsonl", line=1)
        writer.write([11], id="D", source="web", path="in/a.jsonl", line=3)
        writer.num_errors = 2


def test_bytes_on_disk_roll_over_without_splitting_documents(tmp_path: Path) -> None:
    _write_small(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "index.parquet",
        "manifest.json",
        "part-00000.csv.gz",
        "part-00000.npy",
        "part-00001.csv.gz",
        "part-00001.npy",
    ]
    # A raw memmap, no .npy header: exactly what OLMo's MemMapDataset reads.
    part0 = (tmp_path / "part-00000.npy").read_bytes()
    assert part0 == np.array([1, 2, 3, 0, 4, 5, 0], dtype="<u2").tobytes()
    assert np.fromfile(tmp_path / "part-00001.npy", dtype=np.uint16).tolist() == [
        6,
        7,
        8,
        9,
        10,
        0,
        11,
        0,
    ]
    assert np.memmap(tmp_path / "part-00000.npy", dtype=np.uint16, mode="r").tolist() == [
        1,
        2,
        3,
        0,
        4,
        5,
        0,
    ]


def test_dolma_metadata_index_and_manifest(tmp_path: Path) -> None:
    _write_small(tmp_path)
    with gzip.open(tmp_path / "part-00001.csv.gz", "rt", newline="") as handle:
        assert list(csv.reader(handle)) == [
            ["0", "6", "C", "in/c.jsonl", "1"],
            ["6", "8", "D", "in/a.jsonl", "3"],
        ]
    shards = TokenShards(tmp_path)
    assert shards.index.to_pylist() == [
        {"file": "part-00000.npy", "start": 0, "end": 4, "source": "web", "id": "A"},
        {"file": "part-00000.npy", "start": 4, "end": 7, "source": "web", "id": "B"},
        {"file": "part-00001.npy", "start": 0, "end": 6, "source": "code", "id": "C"},
        {"file": "part-00001.npy", "start": 6, "end": 8, "source": "web", "id": "D"},
    ]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["tokenizer"] == {
        "name": "toy",
        "fingerprint": "f" * 64,
        "vocab_size": 100,
        "eos_token_id": 0,
    }
    assert manifest["dtype"] == "uint16"
    assert [(f["path"], f["num_tokens"], f["num_documents"]) for f in manifest["files"]] == [
        ("part-00000.npy", 7, 2),
        ("part-00001.npy", 8, 2),
    ]
    assert (
        manifest["files"][0]["sha256"]
        == hashlib.sha256((tmp_path / "part-00000.npy").read_bytes()).hexdigest()
    )
    assert manifest["sources"] == {
        "code": {"num_documents": 1, "num_tokens": 6},
        "web": {"num_documents": 3, "num_tokens": 9},
    }
    assert (manifest["num_documents"], manifest["num_tokens"], manifest["num_errors"]) == (4, 15, 2)
    assert (shards.num_documents, shards.num_tokens, shards.num_errors) == (4, 15, 2)
    assert shards.document(2) == DocumentSpan("part-00001.npy", 0, 6, "code", "C")
    assert shards.document_tokens(1).tolist() == [4, 5, 0]
    assert shards.document_tokens(-1).tolist() == [11, 0]
    with pytest.raises(IndexError, match="document 4 is out of range"):
        shards.document_tokens(4)


def test_uint32_when_the_vocabulary_passes_65536(tmp_path: Path) -> None:
    assert token_dtype(65536) == np.dtype("<u2")
    assert token_dtype(65537) == np.dtype("<u4")
    with ShardWriter(tmp_path, vocab_size=70000, eos_token_id=69999) as writer:
        writer.write([65536, 1], id="big", source="s")
    assert (tmp_path / "part-00000.npy").read_bytes() == np.array(
        [65536, 1, 69999], dtype="<u4"
    ).tobytes()
    shards = TokenShards(tmp_path)
    assert shards.dtype == np.dtype("<u4")
    assert shards.document_tokens(0).tolist() == [65536, 1, 69999]


def test_out_of_vocabulary_ids_are_refused(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, vocab_size=100, eos_token_id=0) as writer:
        with pytest.raises(
            ValueError, match=r"document 'bad': token id 100 is outside the vocabulary \(0\.\.99\)"
        ):
            writer.write([5, 100, 7], id="bad", source="s")
        with pytest.raises(ValueError, match=r"document 'neg': token id -1 is outside"):
            writer.write([-1, 5], id="neg", source="s")
        writer.write([5], id="good", source="s")
    assert np.fromfile(tmp_path / "part-00000.npy", dtype=np.uint16).tolist() == [5, 0]
    assert TokenShards(tmp_path).num_documents == 1


def test_an_error_inside_the_writer_leaves_nothing(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="boom"),
        ShardWriter(tmp_path, vocab_size=100, eos_token_id=0) as writer,
    ):
        writer.write([1, 2], id="a", source="s")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_shards_are_refused_then_replaced_only_when_complete(tmp_path: Path) -> None:
    _write_small(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match=r"already holds a finished shard set.*overwrite"):
        ShardWriter(tmp_path, vocab_size=100, eos_token_id=0)
    # A failed overwrite leaves the old set exactly as it was.
    with (
        pytest.raises(RuntimeError),
        ShardWriter(tmp_path, vocab_size=100, eos_token_id=0, overwrite=True) as w,
    ):
        w.write([9], id="new", source="s")
        raise RuntimeError("crash")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # A finished overwrite replaces it, stale token files included.
    with ShardWriter(tmp_path, vocab_size=100, eos_token_id=0, overwrite=True) as w:
        w.write([9], id="new", source="s")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "index.parquet",
        "manifest.json",
        "part-00000.csv.gz",
        "part-00000.npy",
    ]
    assert TokenShards(tmp_path).document_tokens(0).tolist() == [9, 0]


def test_an_oversized_document_gets_a_file_of_its_own(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, vocab_size=100, eos_token_id=0, max_tokens_per_file=3) as writer:
        writer.write([1], id="a", source="s")
        writer.write([2, 3, 4, 5], id="long", source="s")
        writer.write([6], id="b", source="s")
    shards = TokenShards(tmp_path)
    assert shards.file_num_tokens.tolist() == [2, 5, 2]
    assert shards.document_tokens(1).tolist() == [2, 3, 4, 5, 0]


def test_reader_errors_name_the_problem(tmp_path: Path, olmo_tokenizer: Tokenizer) -> None:
    with pytest.raises(FileNotFoundError, match=r"not a token-shard folder.*olmo data tokenize"):
        TokenShards(tmp_path)
    _write_small(tmp_path)
    with pytest.raises(
        ValueError, match=r"built with tokenizer 'toy'.*not 'allenai/gpt-neox-olmo-dolma-v1_5'"
    ):
        TokenShards(tmp_path, tokenizer=olmo_tokenizer)
    with open(tmp_path / "part-00001.npy", "ab") as handle:
        handle.write(b"\x00\x00")
    with pytest.raises(ValueError, match=r"holds 18 bytes but .* says 8 uint16 tokens"):
        TokenShards(tmp_path)


def test_matching_tokenizer_is_accepted(tmp_path: Path, olmo_tokenizer: Tokenizer) -> None:
    with ShardWriter.for_tokenizer(tmp_path, olmo_tokenizer) as writer:
        writer.write(olmo_tokenizer.encode("Hello world"), id="h", source="s")
    shards = TokenShards(tmp_path, tokenizer=olmo_tokenizer)
    assert shards.document_tokens(0).tolist() == [12092, 1533, 50279]
    assert shards.manifest["tokenizer"]["fingerprint"] == olmo_tokenizer.fingerprint
