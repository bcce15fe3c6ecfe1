"""Reading Dolma-format documents: JSON lines (plain, gzip, zstd) and Parquet.

A document is a record with a string ``id`` and a string ``text``; ``source`` is optional
(defaulting to the caller's choice or the name of the file's parent folder) and ``added``,
``created`` and ``metadata`` pass through untouched.

Bad input is never skipped silently and never ends the run: every unreadable record or file
(malformed JSON, invalid UTF-8, a missing or non-string field, a line that is not an
object, an unknown extension, a corrupt or truncated gzip/zstd stream, an empty file)
becomes a :class:`ReadError` with the file, the 1-based line (``None`` when the whole file
is at fault) and the reason. :class:`DocumentReader` yields the good documents and collects
the errors in its :class:`ReadReport`; with ``strict=True`` the first error raises a
:class:`DocumentError` (a ``ValueError``) naming ``file:line``.

Reading is split in two steps, :func:`iter_raw_records` (decompression and line splitting,
cheap) and :func:`parse_record` (JSON decoding and validation), so a pipeline can run the
second step in worker processes. Order is deterministic: inputs in the order given, each
folder or glob expanded in sorted order, records in file order.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

__all__ = [
    "JSONL_SUFFIXES",
    "PARQUET_SUFFIXES",
    "Document",
    "DocumentError",
    "DocumentReader",
    "RawRecord",
    "ReadError",
    "ReadReport",
    "iter_raw_records",
    "iter_record_batches",
    "parse_record",
    "read_documents",
    "resolve_inputs",
    "zstd_chunks",
]

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")
PARQUET_SUFFIXES = (".parquet",)
_PASSTHROUGH = ("added", "created", "metadata")
_CHUNK_BYTES = 1 << 20
_PARQUET_BATCH_ROWS = 1024


@dataclass(frozen=True, slots=True)
class Document:
    """One input document and where it came from (``path`` and 1-based ``line``)."""

    id: str
    text: str
    source: str
    path: str
    line: int
    added: Any = None
    created: Any = None
    metadata: Any = None


@dataclass(frozen=True, slots=True)
class ReadError:
    """An unreadable record or file: ``line`` is 1-based, ``None`` for the whole file."""

    path: str
    line: int | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``errors.jsonl``: ``{"file", "line", "reason"}``."""
        return {"file": self.path, "line": self.line, "reason": self.reason}

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.reason}"


class DocumentError(ValueError):
    """Raised in strict mode at the first bad record; ``error`` says where and why."""

    def __init__(self, error: ReadError) -> None:
        super().__init__(f"{error} (run without --strict to record bad input and go on)")
        self.error = error


class RawRecord(NamedTuple):
    """A record before parsing: a JSON line's bytes, or a Parquet row as a dict."""

    path: str
    line: int
    payload: bytes | dict[str, Any]


@dataclass
class ReadReport:
    """Counts and errors of one read; ``on_error`` is called with each error as it occurs."""

    num_files: int = 0
    num_documents: int = 0
    num_bytes: int = 0
    errors: list[ReadError] = field(default_factory=list)
    on_error: Callable[[ReadError], None] | None = None

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def add_error(self, error: ReadError) -> None:
        self.errors.append(error)
        if self.on_error is not None:
            self.on_error(error)


# --------------------------------------------------------------------------- inputs
def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _walk(folder: Path) -> list[Path]:
    """Every non-hidden file under ``folder``, recursively, in sorted path order."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / f for f in files if not f.startswith("."))
    return sorted(found)


def resolve_inputs(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files named by ``inputs`` (files, folders walked recursively, or glob patterns).

    Each input expands in sorted order; inputs keep the order given; a file named twice is
    read once. Every file found is returned, whatever its extension: one the reader does
    not know becomes a :class:`ReadError`, not a silent skip. Raises ``FileNotFoundError``
    for a path that does not exist or a pattern that matches nothing.
    """
    files: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        text = os.fspath(item)
        if Path(text).exists():
            matches = [Path(text)]
        elif _has_glob(text):
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            if not matches:
                raise FileNotFoundError(f"input pattern {text!r} matches no file")
        else:
            raise FileNotFoundError(f"input {text!r} does not exist; pass a file, folder or glob")
        for match in matches:
            for path in _walk(match) if match.is_dir() else [match]:
                key = path.resolve()
                if key not in seen:
                    seen.add(key)
                    files.append(path)
    if not files:
        raise FileNotFoundError(f"no input files under {[os.fspath(i) for i in inputs]}")
    return files


# --------------------------------------------------------------------------- raw records
def _split_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Lines (without the ``\\n``) of a byte stream given in chunks."""
    pending = b""
    for chunk in chunks:
        if not chunk:
            continue
        parts = (pending + chunk).split(b"\n")
        pending = parts.pop()
        yield from parts
    if pending:
        yield pending


def _plain_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            yield chunk


def _gzip_chunks(path: Path) -> Iterator[bytes]:
    # gzip.GzipFile reads multi-member files and raises on truncation (EOFError) or
    # corruption (BadGzipFile / zlib.error); read1 hands over what was decoded before
    # the fault, so the lines before it are kept.
    with gzip.open(path, "rb") as handle:
        while chunk := handle.read1(_CHUNK_BYTES):
            yield chunk


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def zstd_chunks(handle: _Readable) -> Iterator[bytes]:
    """A zstd stream's decoded bytes, frame by frame: a file of several frames is read whole,
    and a frame still open when the input ends (a truncated file) raises ``EOFError``.
    (zstandard's ``stream_reader`` returns a clean end on a truncated frame.)"""
    decompressor = zstandard.ZstdDecompressor()
    decoder = decompressor.decompressobj()
    frame_open = False
    while compressed := handle.read(_CHUNK_BYTES):
        while compressed:
            frame_open = True
            yield decoder.decompress(compressed)
            if not decoder.eof:
                break
            frame_open = False
            compressed = decoder.unused_data
            decoder = decompressor.decompressobj()
    if frame_open:
        raise EOFError("zstd stream ended inside a frame (truncated file)")


def _zstd_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from zstd_chunks(handle)


def _jsonl_records(path: Path, chunks: Iterator[bytes]) -> Iterator[RawRecord | ReadError]:
    name = str(path)
    line = 0
    try:
        for raw in _split_lines(chunks):
            line += 1
            yield RawRecord(name, line, raw)
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as error:
        kind = "truncated" if isinstance(error, EOFError) else "corrupt"
        yield ReadError(name, line + 1, f"{kind} compressed stream after line {line}: {error}")


def _parquet_records(path: Path) -> Iterator[RawRecord | ReadError]:
    name = str(path)
    row = 0
    try:
        parquet = pq.ParquetFile(path)
        columns = parquet.schema_arrow.names
        for required in ("id", "text"):
            if required not in columns:
                yield ReadError(name, None, f"Parquet file has no {required!r} column ({columns})")
                return
        # Row groups are read a batch at a time, so memory stays bounded.
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
            for record in batch.to_pylist():
                row += 1
                yield RawRecord(name, row, record)
    except (OSError, pa.ArrowException) as error:
        yield ReadError(name, row + 1 if row else None, f"unreadable Parquet file: {error}")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (*JSONL_SUFFIXES, *PARQUET_SUFFIXES):
        if name.endswith(suffix):
            return suffix
    return "".join(path.suffixes) or "(none)"


def iter_raw_records(path: str | os.PathLike[str]) -> Iterator[RawRecord | ReadError]:
    """The records of one file in order, or the errors met while reading it.

    Never raises for bad content: an unknown extension, an unreadable file, a corrupt or
    truncated stream or an empty file is yielded as a :class:`ReadError` (after the
    records read before the fault).
    """
    path = Path(path)
    suffix = _suffix(path)
    try:
        if path.stat().st_size == 0:
            yield ReadError(str(path), None, "empty file")
            return
    except OSError as error:
        yield ReadError(str(path), None, f"cannot read file: {error}")
        return
    if suffix in PARQUET_SUFFIXES:
        records = _parquet_records(path)
    elif suffix.endswith(".gz"):
        records = _jsonl_records(path, _gzip_chunks(path))
    elif suffix.endswith(".zst"):
        records = _jsonl_records(path, _zstd_chunks(path))
    elif suffix in JSONL_SUFFIXES:
        records = _jsonl_records(path, _plain_chunks(path))
    else:
        known = ", ".join((*JSONL_SUFFIXES, *PARQUET_SUFFIXES))
        yield ReadError(str(path), None, f"unknown file type {suffix!r}; expected one of {known}")
        return
    empty = True
    for record in records:
        empty = False
        yield record
    if empty:
        yield ReadError(str(path), None, "empty file: no documents")


# --------------------------------------------------------------------------- parsing
def _decode(record: RawRecord) -> dict[str, Any] | str:
    """The record as a dict, or the reason it is not one."""
    payload = record.payload
    if isinstance(payload, dict):
        return payload
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"invalid UTF-8 at byte {error.start}: {payload[error.start : error.start + 4]!r}"
    if not text.strip():
        return "blank line"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return f"malformed JSON: {error}"
    if not isinstance(value, dict):
        return f"expected a JSON object, got {type(value).__name__}"
    return value


def iter_record_batches(
    paths: Iterable[str | os.PathLike[str]], batch_size: int, max_batch_bytes: int = 8 << 20
) -> Iterator[list[RawRecord | ReadError]]:
    """Raw records of many files in order, with file-level errors in place, in batches of at
    most ``batch_size`` items or about ``max_batch_bytes`` of JSON (bounded memory)."""
    batch: list[RawRecord | ReadError] = []
    batch_bytes = 0
    for path in paths:
        for item in iter_raw_records(path):
            batch.append(item)
            if isinstance(item, RawRecord) and isinstance(item.payload, bytes):
                batch_bytes += len(item.payload)
            if len(batch) >= batch_size or batch_bytes >= max_batch_bytes:
                yield batch
                batch, batch_bytes = [], 0
    if batch:
        yield batch


def _lone_surrogate_at(text: str) -> int | None:
    """Index of the first lone surrogate (JSON lets ``\\ud800`` through), or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return error.start
    return None


def parse_record(record: RawRecord, default_source: str | None = None) -> Document | ReadError:
    """A :class:`Document` from a raw record, or the :class:`ReadError` saying why not.

    ``id`` must be a string (an integer is accepted and turned into its decimal string),
    ``text`` a string, ``source`` (if present) a string; a missing ``source`` becomes
    ``default_source``, or the name of the file's parent folder when that is ``None``.
    """
    value = _decode(record)
    if isinstance(value, str):
        return ReadError(record.path, record.line, value)
    doc_id = value.get("id")
    if doc_id is None:
        return ReadError(record.path, record.line, "missing 'id'")
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    elif not isinstance(doc_id, str):
        return ReadError(record.path, record.line, f"'id' must be a string, got {doc_id!r}")
    text = value.get("text")
    if not isinstance(text, str):
        what = (
            "missing 'text'"
            if text is None
            else f"'text' must be a string, got {type(text).__name__}"
        )
        return ReadError(record.path, record.line, f"{what} (id {doc_id!r})")
    for field_name, field_value in (("id", doc_id), ("text", text)):
        surrogate = _lone_surrogate_at(field_value)
        if surrogate is not None:
            return ReadError(
                record.path,
                record.line,
                f"'{field_name}' holds a lone surrogate (an unpaired \\u{ord(field_value[surrogate]):04x} "
                f"escape) at character {surrogate}: not valid Unicode (id {doc_id!r})",
            )
    source = value.get("source")
    if source is None:
        if default_source is None:
            default_source = os.path.basename(os.path.dirname(os.path.abspath(record.path)))
        source = default_source
    elif not isinstance(source, str):
        return ReadError(record.path, record.line, f"'source' must be a string, got {source!r}")
    return Document(
        id=doc_id,
        text=text,
        source=source,
        path=record.path,
        line=record.line,
        added=value.get("added"),
        created=value.get("created"),
        metadata=value.get("metadata"),
    )


# --------------------------------------------------------------------------- reader
class DocumentReader:
    """Iterate the documents of many files; errors go to :attr:`report` (or raise if strict).

    Usage::

        reader = DocumentReader(["data/"], source="web")
        for document in reader:
            ...
        reader.report.num_documents, reader.report.errors

    ``source`` fills in documents that have none (else the parent folder's name is used).
    ``on_error`` is called with each :class:`ReadError` as it is found. Iterating again
    reads the files again, into a fresh report.
    """

    def __init__(
        self,
        inputs: Iterable[str | os.PathLike[str]],
        *,
        source: str | None = None,
        strict: bool = False,
        on_error: Callable[[ReadError], None] | None = None,
    ) -> None:
        self.files = resolve_inputs(inputs)
        self.source = source
        self.strict = strict
        self.on_error = on_error
        self.report = ReadReport(on_error=on_error)

    def iter_records(self) -> Iterator[RawRecord]:
        """Raw records of every file, in order; read errors go to the report (or raise)."""
        self.report = ReadReport(on_error=self.on_error)
        for path in self.files:
            self.report.num_files += 1
            for item in iter_raw_records(path):
                if isinstance(item, ReadError):
                    self.handle_error(item)
                else:
                    yield item

    def handle_error(self, error: ReadError) -> None:
        """Record ``error``, or raise it as a :class:`DocumentError` in strict mode."""
        if self.strict:
            raise DocumentError(error)
        self.report.add_error(error)

    def __iter__(self) -> Iterator[Document]:
        for record in self.iter_records():
            parsed = parse_record(record, self.source)
            if isinstance(parsed, ReadError):
                self.handle_error(parsed)
                continue
            self.report.num_documents += 1
            self.report.num_bytes += len(parsed.text.encode("utf-8"))
            yield parsed


def read_documents(
    inputs: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    source: str | None = None,
    strict: bool = False,
    on_error: Callable[[ReadError], None] | None = None,
) -> DocumentReader:
    """A :class:`DocumentReader` over ``inputs`` (one path or pattern, or several)."""
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    return DocumentReader(inputs, source=source, strict=strict, on_error=on_error)
