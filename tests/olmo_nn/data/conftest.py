"""Fixtures of the data tests: small Dolma files in every format, written by hand."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

Line = dict[str, Any] | str | bytes


def _line_bytes(line: Line) -> bytes:
    if isinstance(line, bytes):
        return line
    if isinstance(line, str):
        return line.encode("utf-8")
    return json.dumps(line).encode("utf-8")


def write_lines(path: Path, lines: Sequence[Line]) -> Path:
    """Write JSON lines (dicts are dumped, str/bytes written as is), compressed by suffix."""
    data = b"".join(_line_bytes(line) + b"\n" for line in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    elif path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def write_parquet(path: Path, rows: Sequence[dict[str, Any]], row_group_size: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(list(rows)), path, row_group_size=row_group_size)
    return path


#: The hand-made corpus: (relative path, documents) — every supported format.
CORPUS: list[tuple[str, list[dict[str, Any]]]] = [
    (
        "web/a.jsonl",
        [
            {"id": "a1", "text": "Hello world", "source": "web", "added": "2024-01-01"},
            {"id": "a2", "text": "The cat sat."},
        ],
    ),
    ("books/b.json.gz", [{"id": "b1", "text": "café", "metadata": {"lang": "fr"}}]),
    ("code/c.jsonl.zst", [{"id": "c1", "text": "zstd text", "source": "code"}]),
    (
        "tables/d.parquet",
        [
            {"id": "d1", "text": "parquet row", "source": "tables"},
            {"id": "d2", "text": "Hello world", "source": "tables"},
            {"id": "d3", "text": "", "source": "tables"},
        ],
    ),
]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A folder holding :data:`CORPUS`; sorted walk order is books, code, tables, web."""
    root = tmp_path / "corpus"
    for relative, documents in CORPUS:
        path = root / relative
        if path.suffix == ".parquet":
            write_parquet(path, documents)
        else:
            write_lines(path, documents)
    return root


#: ``write_lines(path, lines)``: JSON lines (dicts dumped, str/bytes as is), compressed by suffix.
LinesWriter = Callable[[Path, Sequence[Line]], Path]
#: ``write_parquet(path, rows, row_group_size=2)``.
ParquetWriter = Callable[..., Path]


@pytest.fixture
def lines_writer() -> LinesWriter:
    return write_lines


@pytest.fixture
def parquet_writer() -> ParquetWriter:
    return write_parquet
