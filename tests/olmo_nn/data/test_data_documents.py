"""Reading Dolma documents: every format, every kind of bad input, strict mode, order."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from olmo_nn.data import DocumentError, ReadError, read_documents, resolve_inputs


def test_reads_every_format_in_sorted_order(corpus: Path) -> None:
    reader = read_documents(corpus)
    documents = list(reader)
    assert [(d.id, d.text, d.source, Path(d.path).name, d.line) for d in documents] == [
        ("b1", "café", "books", "b.json.gz", 1),
        ("c1", "zstd text", "code", "c.jsonl.zst", 1),
        ("d1", "parquet row", "tables", "d.parquet", 1),
        ("d2", "Hello world", "tables", "d.parquet", 2),
        ("d3", "", "tables", "d.parquet", 3),
        ("a1", "Hello world", "web", "a.jsonl", 1),
        ("a2", "The cat sat.", "web", "a.jsonl", 2),
    ]
    assert documents[0].metadata == {"lang": "fr"}
    assert documents[5].added == "2024-01-01"
    assert reader.report.num_files == 4
    assert reader.report.num_documents == 7
    assert reader.report.num_errors == 0


def test_source_option_fills_in_only_missing_sources(corpus: Path) -> None:
    sources = {d.id: d.source for d in read_documents(corpus, source="mix")}
    assert sources == {
        "b1": "mix",
        "c1": "code",
        "d1": "tables",
        "d2": "tables",
        "d3": "tables",
        "a1": "web",
        "a2": "mix",
    }


def test_inputs_keep_their_order_and_globs_expand_sorted(corpus: Path) -> None:
    files = resolve_inputs(
        [corpus / "web", str(corpus / "[bc]*" / "*"), corpus / "web" / "a.jsonl"]
    )
    assert [f.name for f in files] == ["a.jsonl", "b.json.gz", "c.jsonl.zst"]
    with pytest.raises(FileNotFoundError, match="matches no file"):
        resolve_inputs([str(corpus / "*.nothing")])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_inputs([corpus / "missing.jsonl"])


def test_large_multiframe_zstd_and_multimember_gzip(tmp_path: Path) -> None:
    lines = [f'{{"id": "{i}", "text": "{"x" * (i % 50)}"}}'.encode() for i in range(5000)]
    data = b"\n".join(lines) + b"\n"
    half = len(data) // 2
    compressor = zstandard.ZstdCompressor()
    (tmp_path / "m.jsonl.zst").write_bytes(
        compressor.compress(data[:half]) + compressor.compress(data[half:])
    )
    (tmp_path / "m.jsonl.gz").write_bytes(gzip.compress(data[:half]) + gzip.compress(data[half:]))
    for name in ("m.jsonl.zst", "m.jsonl.gz"):
        reader = read_documents(tmp_path / name)
        ids = [d.id for d in reader]
        assert ids == [str(i) for i in range(5000)], name
        assert reader.report.errors == []


Writer = Callable[..., Path]


def _bad_corpus(root: Path, write_lines: Writer, write_parquet: Writer) -> None:
    write_lines(
        root / "src" / "mixed.jsonl",
        [
            {"id": "ok1", "text": "fine"},
            '{"id": "x", "text": ',
            b'{"id": "u", "text": "\xff\xfe"}',
            {"id": "no-text"},
            {"id": "num", "text": 5},
            {"text": "no id"},
            "[1, 2]",
            "   ",
            {"id": 7, "text": "integer ids are fine"},
            {"id": "s", "text": "t", "source": 3},
        ],
    )
    (root / "src" / "empty.jsonl").write_bytes(b"")
    (root / "src" / "notes.txt").write_text("not documents\n")
    # Incompressible enough to span several zstd blocks and gzip reads.
    good = b"".join(
        f'{{"id": "g{i}", "text": "{hashlib.sha256(str(i).encode()).hexdigest() * 4}"}}\n'.encode()
        for i in range(2000)
    )
    (root / "src" / "trunc.jsonl.gz").write_bytes(gzip.compress(good, mtime=0)[:-200])
    (root / "src" / "trunc.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(good)[:-50])
    (root / "src" / "garbage.jsonl.zst").write_bytes(b"definitely not zstd")
    (root / "src" / "garbage.parquet").write_bytes(b"PAR1 nope")
    write_parquet(root / "src" / "notext.parquet", [{"id": "p", "body": "no text column"}])


def test_every_kind_of_bad_input_is_reported_with_file_and_line(
    tmp_path: Path, lines_writer: Writer, parquet_writer: Writer
) -> None:
    _bad_corpus(tmp_path, lines_writer, parquet_writer)
    seen: list[ReadError] = []
    reader = read_documents(tmp_path / "src", on_error=seen.append)
    documents = list(reader)
    errors = [(Path(e.path).name, e.line, e.reason) for e in reader.report.errors]
    assert seen == reader.report.errors
    expected = [
        ("empty.jsonl", None, "empty file"),
        ("garbage.jsonl.zst", 1, "corrupt compressed stream after line 0"),
        ("garbage.parquet", None, "unreadable Parquet file"),
        ("mixed.jsonl", 2, "malformed JSON"),
        ("mixed.jsonl", 3, "invalid UTF-8 at byte 21"),
        ("mixed.jsonl", 4, "missing 'text' (id 'no-text')"),
        ("mixed.jsonl", 5, "'text' must be a string, got int (id 'num')"),
        ("mixed.jsonl", 6, "missing 'id'"),
        ("mixed.jsonl", 7, "expected a JSON object, got list"),
        ("mixed.jsonl", 8, "blank line"),
        ("mixed.jsonl", 10, "'source' must be a string, got 3"),
        ("notes.txt", None, "unknown file type '.txt'"),
        ("notext.parquet", None, "Parquet file has no 'text' column"),
        # The line of a truncation depends on the compressor; checked below.
        ("trunc.jsonl.gz", -1, "truncated compressed stream"),
        ("trunc.jsonl.zst", -1, "truncated compressed stream"),
    ]
    assert len(errors) == len(expected)
    for (name, line, reason), (want_name, want_line, want_reason) in zip(
        errors, expected, strict=True
    ):
        assert name == want_name
        if want_line != -1:
            assert line == want_line, (name, line)
        assert reason.startswith(want_reason), (name, reason)
    # Truncated streams keep every complete line before the damage, and blame the next one.
    by_file: dict[str, list[str]] = {}
    for d in documents:
        by_file.setdefault(Path(d.path).name, []).append(d.id)
    for name in ("trunc.jsonl.gz", "trunc.jsonl.zst"):
        kept = by_file[name]
        assert 0 < len(kept) < 2000
        assert kept == [f"g{i}" for i in range(len(kept))]
        (error,) = [e for e in reader.report.errors if Path(e.path).name == name]
        assert error.line == len(kept) + 1
    assert by_file["mixed.jsonl"] == ["ok1", "7"]
    assert reader.report.num_documents == len(documents)


def test_strict_mode_raises_at_the_first_bad_record(tmp_path: Path, lines_writer: Writer) -> None:
    path = lines_writer(tmp_path / "s" / "a.jsonl", [{"id": "1", "text": "ok"}, "{oops"])
    reader = read_documents(path, strict=True)
    with pytest.raises(DocumentError, match=r"a\.jsonl:2: malformed JSON") as info:
        list(reader)
    assert isinstance(info.value, ValueError)
    assert info.value.error.line == 2
    empty = tmp_path / "s" / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(DocumentError, match=r"empty\.jsonl: empty file"):
        list(read_documents(empty, strict=True))


def test_windows_line_endings_and_missing_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "w" / "crlf.jsonl"
    path.parent.mkdir()
    path.write_bytes(b'{"id": "1", "text": "a"}\r\n{"id": "2", "text": "b"}')
    assert [(d.id, d.text, d.line) for d in read_documents(path)] == [("1", "a", 1), ("2", "b", 2)]


def test_lone_surrogates_are_reported_not_tokenized(tmp_path: Path, lines_writer: Writer) -> None:
    # JSON lets an unpaired \ud800 escape through; it is not Unicode, so the record is an error.
    path = lines_writer(
        tmp_path / "s" / "a.jsonl",
        [
            '{"id": "ok", "text": "fine"}',
            '{"id": "bad", "text": "ab\\ud800cd"}',
            '{"id": "pair", "text": "\\ud83d\\ude00 is a paired emoji"}',
        ],
    )
    reader = read_documents(path)
    assert [d.id for d in reader] == ["ok", "pair"]
    (error,) = reader.report.errors
    assert (error.line, error.reason) == (
        2,
        "'text' holds a lone surrogate (an unpaired \\ud800 escape) at character 2: "
        "not valid Unicode (id 'bad')",
    )
