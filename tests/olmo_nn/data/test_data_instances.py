"""Fixed-length instances over token shards, and the documents inside each, worked by hand."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from olmo_nn.data import InstanceDataset, InstanceDocument, ShardWriter


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    """part-00000: A=[1,2,3,eos] B=[4,5,eos]; part-00001: C=[6..10,eos] D=[11,eos] (eos=0)."""
    with ShardWriter(tmp_path, vocab_size=100, eos_token_id=0, max_tokens_per_file=8) as writer:
        writer.write([1, 2, 3], id="A", source="web")
        writer.write([4, 5], id="B", source="web")
        writer.write([6, 7, 8, 9, 10], id="C", source="code")
        writer.write([11], id="D", source="web")
    return tmp_path


def test_windows_per_file_with_the_remainder_dropped(shards: Path) -> None:
    dataset = InstanceDataset(shards, sequence_length=3)
    # File 0 has 7 tokens -> 2 windows (1 left over); file 1 has 8 -> 2 windows (2 left over).
    assert len(dataset) == 4
    assert [dataset[i].tolist() for i in range(4)] == [[1, 2, 3], [0, 4, 5], [6, 7, 8], [9, 10, 0]]
    assert dataset[0].dtype == np.int64
    assert dataset.raw(3).dtype == np.uint16
    assert dataset[-1].tolist() == [9, 10, 0]
    with pytest.raises(IndexError, match="instance 4 is out of range"):
        dataset[4]


def test_documents_in_instance(shards: Path) -> None:
    dataset = InstanceDataset(shards, sequence_length=3)
    assert dataset.documents_in_instance(0) == [InstanceDocument("web", "A", 0, 3, 0, 0)]
    # Window [3, 6) of file 0: A's EOS, then B's first two tokens.
    assert dataset.documents_in_instance(1) == [
        InstanceDocument("web", "A", 0, 1, 3, 0),
        InstanceDocument("web", "B", 1, 3, 0, 1),
    ]
    assert dataset.documents_in_instance(2) == [InstanceDocument("code", "C", 0, 3, 0, 2)]
    # Window [3, 6) of file 1: the rest of C; D lies in the dropped remainder.
    assert dataset.documents_in_instance(3) == [InstanceDocument("code", "C", 0, 3, 3, 2)]


def test_documents_in_instance_agrees_with_a_scan(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 40, size=300)
    with ShardWriter(tmp_path, vocab_size=1000, eos_token_id=0, max_tokens_per_file=500) as writer:
        for i, length in enumerate(lengths):
            writer.write(rng.integers(1, 1000, size=length), id=str(i), source="s")
    dataset = InstanceDataset(tmp_path, sequence_length=64)
    index = dataset.shards.index.to_pylist()
    for i in range(len(dataset)):
        file, start = dataset.locate(i)
        name = dataset.shards.files[file].name
        expected = [
            str(row["id"])
            for row in index
            if row["file"] == name and row["start"] < start + 64 and row["end"] > start
        ]
        found = dataset.documents_in_instance(i)
        assert [d.id for d in found] == expected
        # The spans tile the window exactly: documents are back to back.
        assert found[0].start == 0 and found[-1].end == 64
        assert all(a.end == b.start for a, b in itertools.pairwise(found))
        tokens = dataset[i]
        assert all(tokens[d.end - 1] == 0 for d in found[:-1])


def test_sequence_length_must_be_positive(shards: Path) -> None:
    with pytest.raises(ValueError, match="sequence_length=0"):
        InstanceDataset(shards, sequence_length=0)
