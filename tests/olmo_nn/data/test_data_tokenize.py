"""The tokenize pipeline and ``olmo data tokenize``: known ids, errors, strict, determinism."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from olmo_nn.cli.main import main
from olmo_nn.data import InstanceDataset, TokenShards, tokenize_documents
from olmo_nn.tokenizer import Tokenizer

EOS = 50279
#: The corpus fixture's documents in read order with their OLMo ids (checked against encode).
EXPECTED = [
    ("books", "b1", "café", [68, 2320, 860]),
    ("code", "c1", "zstd text", [91, 8400, 2505]),
    ("tables", "d1", "parquet row", [1148, 21118, 4194]),
    ("tables", "d2", "Hello world", [12092, 1533]),
    ("tables", "d3", "", []),
    ("web", "a1", "Hello world", [12092, 1533]),
    ("web", "a2", "The cat sat.", [510, 5798, 2206, 15]),
]


def test_known_ids_on_disk(corpus: Path, tmp_path: Path, olmo_tokenizer: Tokenizer) -> None:
    for _, _, text, ids in EXPECTED:
        assert olmo_tokenizer.encode(text) == ids
    out = tmp_path / "shards"
    summary = tokenize_documents([corpus], out, tokenizer=olmo_tokenizer)
    expected_tokens = [t for *_, ids in EXPECTED for t in [*ids, EOS]]
    assert np.fromfile(out / "part-00000.npy", dtype=np.uint16).tolist() == expected_tokens
    shards = TokenShards(out, tokenizer=olmo_tokenizer)
    rows = shards.index.to_pylist()
    starts = np.cumsum([0] + [len(ids) + 1 for *_, ids in EXPECTED]).tolist()
    assert rows == [
        {
            "file": "part-00000.npy",
            "start": starts[i],
            "end": starts[i + 1],
            "source": source,
            "id": doc_id,
        }
        for i, (source, doc_id, _, _) in enumerate(EXPECTED)
    ]
    assert (summary.num_documents, summary.num_tokens, summary.num_errors) == (7, 24, 0)
    assert summary.sources == {
        "books": {"num_documents": 1, "num_tokens": 4},
        "code": {"num_documents": 1, "num_tokens": 4},
        "tables": {"num_documents": 3, "num_tokens": 8},
        "web": {"num_documents": 2, "num_tokens": 8},
    }
    assert (out / "errors.jsonl").read_text() == ""
    assert olmo_tokenizer.decode(shards.document_tokens(0)) == "café<|endoftext|>"
    assert InstanceDataset(shards, sequence_length=8)[1].tolist() == expected_tokens[8:16]


def test_bad_records_go_to_errors_jsonl(
    tmp_path: Path, lines_writer: Callable[..., Path], olmo_tokenizer: Tokenizer
) -> None:
    lines_writer(
        tmp_path / "in" / "a.jsonl", [{"id": "1", "text": "Hello world"}, "{bad", {"id": "2"}]
    )
    (tmp_path / "in" / "b.txt").write_text("?")
    out = tmp_path / "out"
    summary = tokenize_documents([tmp_path / "in"], out, tokenizer=olmo_tokenizer, source="mine")
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [(Path(e["file"]).name, e["line"]) for e in errors] == [
        ("a.jsonl", 2),
        ("a.jsonl", 3),
        ("b.txt", None),
    ]
    assert errors[1]["reason"] == "missing 'text' (id '2')"
    assert summary.num_errors == 3
    assert TokenShards(out).manifest["num_errors"] == 3
    assert TokenShards(out).index.to_pylist() == [
        {"file": "part-00000.npy", "start": 0, "end": 3, "source": "mine", "id": "1"}
    ]
    assert "3 bad input records, listed in" in summary.format()


def test_strict_leaves_no_output(
    tmp_path: Path, lines_writer: Callable[..., Path], olmo_tokenizer: Tokenizer
) -> None:
    lines_writer(tmp_path / "in" / "a.jsonl", [{"id": "1", "text": "ok"}, "{bad"])
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"a\.jsonl:2: malformed JSON"):
        tokenize_documents([tmp_path / "in"], out, tokenizer=olmo_tokenizer, strict=True)
    assert list(out.iterdir()) == []


def test_same_bytes_whatever_the_workers_and_batches(
    tmp_path: Path, lines_writer: Callable[..., Path], olmo_tokenizer: Tokenizer
) -> None:
    for shard in range(3):
        lines_writer(
            tmp_path / "in" / f"{shard}.jsonl.gz",
            [
                {
                    "id": f"{shard}-{i}",
                    "text": f"document {i} of shard {shard}: " + "words " * (i % 17),
                }
                for i in range(120)
            ]
            + ["not json"],
        )
    outputs = []
    for workers, batch_size in ((1, 1000), (2, 7), (3, 50)):
        out = tmp_path / f"out-{workers}"
        tokenize_documents(
            [tmp_path / "in"],
            out,
            tokenizer=olmo_tokenizer,
            workers=workers,
            batch_size=batch_size,
            max_tokens_per_file=1000,
        )
        outputs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert (
        len(outputs[0]) > 4 * 2 + 3
    )  # several token files, their metadata, index, manifest, errors
    assert outputs[0] == outputs[1] == outputs[2]


def test_cli_tokenize(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = [
        "data",
        "tokenize",
        str(corpus),
        "--output",
        str(out),
        "--workers",
        "1",
        "--no-progress",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "tokenized 7 documents" in printed
    assert "24 tokens" in printed
    assert "no bad input records" in printed
    assert TokenShards(out).num_documents == 7
    # A finished shard set is refused unless --overwrite.
    assert main(argv) == 2
    assert "already holds a finished shard set" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--max-tokens-per-file", "8"]) == 0
    assert [p.name for p in TokenShards(out).files] == [
        "part-00000.npy",
        "part-00001.npy",
        "part-00002.npy",
    ]


def test_cli_strict_exits_2_with_file_and_line(
    tmp_path: Path, lines_writer: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = lines_writer(
        tmp_path / "in" / "a.jsonl", [{"id": "1", "text": "ok"}, {"id": "2", "text": None}]
    )
    out = tmp_path / "out"
    argv = [
        "data",
        "tokenize",
        str(bad),
        "-o",
        str(out),
        "--workers",
        "1",
        "--no-progress",
        "--strict",
    ]
    assert main(argv) == 2
    assert f"{bad}:2: missing 'text' (id '2')" in capsys.readouterr().err
    assert not (out / "manifest.json").exists()
    assert main(["data", "tokenize", str(tmp_path / "nothing"), "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_all_inputs_rejected_fails_naming_errors_jsonl(
    tmp_path: Path, lines_writer: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = lines_writer(tmp_path / "in" / "a.jsonl", ["{bad", {"id": "2"}])
    out = tmp_path / "out"
    argv = ["data", "tokenize", str(bad), "-o", str(out), "--workers", "1", "--no-progress"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"olmo data: error: all 2 input records were rejected, so no token shards were "
        f"written to {out}; {out / 'errors.jsonl'} lists each one's file, line and reason\n"
    )
    assert sorted(p.name for p in out.iterdir()) == ["errors.jsonl"]
    assert len((out / "errors.jsonl").read_text().splitlines()) == 2
