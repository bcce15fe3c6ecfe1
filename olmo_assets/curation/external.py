"""A researcher's own corpus, read from local files or object-store URLs.

A lab source names its files with patterns (local paths, folders, globs, or fsspec URLs
such as ``s3://bucket/cc/*.jsonl.gz`` and ``gs://...``) and a format: ``dolma`` (JSON
lines, plain, gzip or zstd), ``parquet`` (any schema, mapped by :class:`Fields`), ``html``
(one page per file) or ``warc`` (the HTML responses of a web archive). This module lists
those files (:func:`list_files`), groups them into shards that stay stable as files are
added (:func:`plan_shards`) and reads them as documents (:func:`iter_documents`).

Reading is exact or it fails: every file is identified by its size and a fingerprint the
store gives for free (S3's ETag, GCS's generation, a local file's mtime) and is checked
before and after it is read, so a shard never mixes two versions of a file
(:class:`FileChangedError`). A record that cannot become a document is yielded as a
:class:`Rejected` with its bytes, for the caller to quarantine; nothing is dropped silently.

Credentials and endpoints never go in params: they come from the environment as for the
cloud's own tools. For S3, botocore reads ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
(or ``AWS_PROFILE`` and ``~/.aws``) and ``AWS_ENDPOINT_URL`` for an S3-compatible store
(MinIO, Ceph, moto), which s3fs honours; for GCS, gcsfs (installed separately) reads
``GOOGLE_APPLICATION_CREDENTIALS`` or the gcloud login.
"""

from __future__ import annotations

import codecs
import email.message
import gzip
import io
import json
import os
import re
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import infer_compression
from warcio.archiveiterator import ArchiveIterator
from warcio.bufferedreaders import ChunkedDataException
from warcio.exceptions import ArchiveLoadFailed
from warcio.statusandheaders import StatusAndHeadersParserException

# The line splitting and JSON decoding of the Dolma reader, so a line rejected here is
# rejected there too, with the same reason.
from olmo_nn.data.documents import (
    RawRecord,
    ReadError,
    _decode,
    _split_lines,
    parse_record,
    zstd_chunks,
)

__all__ = [
    "FORMATS",
    "SKIPPED_NON_HTML",
    "Fields",
    "FileChangedError",
    "ReadStats",
    "Rejected",
    "SourceError",
    "SourceFile",
    "iter_documents",
    "list_files",
    "plan_shards",
    "stat_files",
]

FORMATS = ("dolma", "parquet", "html", "warc")
#: :attr:`ReadStats.skipped` key for WARC responses that are not HTML (images, PDFs, ...);
#: other skipped WARC records count under ``"<type> record"`` (``"request record"``, ...).
SKIPPED_NON_HTML = "non-HTML response"

_ACCESS_HINT = (
    "check the URL and the access to it: credentials and endpoint come from the environment "
    "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, AWS_ENDPOINT_URL for an "
    "S3-compatible store; GOOGLE_APPLICATION_CREDENTIALS or a gcloud login for gs://, with "
    "gcsfs installed), never from params"
)
_CHUNK_BYTES = 1 << 20
_PARQUET_BATCH_ROWS = 1024
_PASSTHROUGH = ("added", "created")
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
# Like a browser's prescan, the <meta> charset is looked for near the top of the page.
_META_PRESCAN_BYTES = 4096
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([-\w.:]+)""", re.IGNORECASE)
# Pages labelled Latin-1 or ASCII are windows-1252 in practice (curly quotes at 0x93, ...);
# browsers decode them so, per the WHATWG encoding standard.
_WHATWG_ALIASES = {"iso8859-1": "cp1252", "ascii": "cp1252"}
# What warcio raises on bad input: besides its own errors, an AttributeError for a record
# cut inside its headers (no URI) and a ValueError for an unreadable length.
_CORRUPT_WARC = (
    ArchiveLoadFailed,
    StatusAndHeadersParserException,
    ChunkedDataException,
    EOFError,
    zlib.error,
    AttributeError,
    ValueError,
)
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


@dataclass(frozen=True)
class Fields:
    """Where a record's parts are, for schemas other than Dolma's."""

    id: str = "id"
    """Column or key of the document id (an integer id becomes its decimal string)."""
    text: str = "text"
    """Column or key of the document text."""
    metadata: tuple[str, ...] = ()
    """Extra columns or keys copied into the document's ``metadata`` dict."""
    url: str | None = None
    """A column or key holding the page URL, copied to ``metadata["url"]``."""


@dataclass(frozen=True)
class SourceFile:
    """One listed file: where it is, and what tells that its content changed."""

    url: str
    """An absolute local path (``file://`` stripped), or a URL such as ``s3://bucket/key``."""
    size: int
    """Size in bytes, as stored (compressed files: the compressed size)."""
    fingerprint: str
    """``etag:<ETag>`` (S3), ``generation:<n>`` or ``md5:<hash>`` (GCS), ``mtime_ns:<n>``
    (local); never a hash of the content, so listing reads no data."""


@dataclass(frozen=True)
class Rejected:
    """A record that cannot become a document; the caller quarantines it, never drops it."""

    url: str
    line: int | None
    """1-based line (JSON lines) or row (Parquet), the record's byte offset in the file
    (WARC), or ``None`` when the whole file is at fault."""
    reason: str
    raw: bytes
    """The record's bytes (a Parquet row as JSON); empty for a file-level fault."""


@dataclass
class ReadStats:
    """Counts of one :func:`iter_documents` call, filled in as it reads."""

    files: int = 0
    """Files read to their end."""
    records: int = 0
    """Records met: JSON lines, Parquet rows, HTML pages, WARC records (skipped included)."""
    documents: int = 0
    rejected: int = 0
    """:class:`Rejected` items yielded, file-level ones (corrupt stream, empty file) included."""
    skipped: dict[str, int] = field(default_factory=dict)
    """WARC records that are not pages, by reason (:data:`SKIPPED_NON_HTML`, ``"request
    record"``, ...)."""
    bytes_read: int = 0
    """Stored (possibly compressed) bytes of the files read to their end."""

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


class SourceError(OSError):
    """A source file or pattern that cannot be listed or read (missing bucket, no access)."""


class FileChangedError(SourceError):
    """A file whose size or fingerprint is not the listed one: the shard must be re-read."""


# --------------------------------------------------------------------------- listing
def _filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """The filesystem and path of ``url``; a plain path or ``file://`` URL is local."""
    if url.startswith("file://"):
        url = url.removeprefix("file://")
    if "://" not in url:
        url = os.path.abspath(os.path.expanduser(url))
    try:
        # Listings are never cached: a source is listed again precisely to see new files.
        return url_to_fs(url, use_listings_cache=False)
    except (ImportError, ValueError) as error:
        raise SourceError(
            f"cannot open {url}: {error}; a source is a local path or an fsspec URL "
            "(file://, s3://, gs:// with gcsfs installed)"
        ) from error


def _read_error(url: str, error: Exception) -> SourceError:
    return SourceError(f"cannot read {url}: {error} ({type(error).__name__}); {_ACCESS_HINT}")


def _fingerprint(url: str, info: Mapping[str, Any]) -> str:
    if info.get("ETag"):
        return f"etag:{str(info['ETag']).strip(chr(34))}"
    if info.get("generation"):
        return f"generation:{info['generation']}"
    if info.get("md5Hash"):
        return f"md5:{info['md5Hash']}"
    raise SourceError(
        f"{url}: the store reports no ETag, generation or md5, so a change to the file could "
        "not be detected; copy the source to local disk, S3 or GCS"
    )


def _source_file(fs: AbstractFileSystem, path: str, info: Mapping[str, Any]) -> SourceFile:
    if isinstance(fs, LocalFileSystem):
        # st_mtime_ns: fsspec's info has float seconds, too coarse for a quick rewrite.
        stat = os.stat(path)
        return SourceFile(path, stat.st_size, f"mtime_ns:{stat.st_mtime_ns}")
    url = fs.unstrip_protocol(path)
    return SourceFile(url, int(info["size"]), _fingerprint(url, info))


def _literal_prefix(path: str) -> str:
    """The part of a glob before its first wildcard component."""
    parts = path.split("/")
    for index, part in enumerate(parts):
        if any(c in part for c in "*?["):
            return "/".join(parts[:index])
    return path


def _is_hidden(name: str, below: str) -> bool:
    """Whether a part of ``name`` under the folder ``below`` starts with a dot."""
    relative = name[len(below) :].strip("/")
    return any(part.startswith(".") for part in relative.split("/"))


def _expand(fs: AbstractFileSystem, path: str) -> list[SourceFile]:
    """Files of one pattern; hidden names (``.x``) that a wildcard or a folder walk reaches
    are skipped, unless the pattern's wildcard part names them itself (``data/.*``)."""
    if any(c in path for c in "*?["):
        matches = fs.glob(path, detail=True)
        below = _literal_prefix(path)
        skip_hidden = not _is_hidden(path, below)
    else:
        try:
            matches = {path: fs.info(path)}
        except FileNotFoundError:
            return []
        below, skip_hidden = path, True
    found: list[SourceFile] = []
    for name, info in sorted(matches.items()):
        if skip_hidden and _is_hidden(name, below):
            continue
        if info["type"] == "directory":
            found.extend(
                _source_file(fs, inner, inner_info)
                for inner, inner_info in sorted(fs.find(name, detail=True).items())
                if not _is_hidden(inner, name)
            )
        else:
            found.append(_source_file(fs, name, info))
    return found


def _check_bucket(fs: AbstractFileSystem, path: str, pattern: str) -> None:
    """Raise :class:`SourceError` if the bucket of a remote ``path`` is missing or closed.

    An object store answers a listing under a missing bucket with nothing, which would
    read as "no files yet"; asking for the bucket itself tells the two apart.
    """
    if isinstance(fs, LocalFileSystem):
        return
    bucket = path.split("/", 1)[0]
    try:
        fs.info(bucket)
    except Exception as error:  # the store's own error types (botocore, google-auth)
        what = (
            "does not exist"
            if isinstance(error, FileNotFoundError)
            else f"cannot be read: {error} ({type(error).__name__})"
        )
        raise SourceError(
            f"source pattern {pattern!r}: bucket {bucket!r} {what}; {_ACCESS_HINT}"
        ) from error


def list_files(patterns: Sequence[str]) -> list[SourceFile]:
    """The files named by ``patterns``, sorted by URL, each once.

    A pattern is a local path, a folder (walked recursively), a glob (``**`` crosses
    folders) or an fsspec URL (``file://``, ``s3://``, ``gs://``) with or without a glob;
    names starting with ``.`` below the pattern's fixed part are skipped. Raises
    ``FileNotFoundError`` for a pattern that matches nothing, :class:`SourceError` for a
    missing bucket, a denied permission or missing credentials.
    """
    found: dict[str, SourceFile] = {}
    for pattern in patterns:
        fs, path = _filesystem(pattern)
        try:
            matches = _expand(fs, path)
            if not matches:
                _check_bucket(fs, path, pattern)
        except SourceError:
            raise
        except Exception as error:  # the store's own error types (botocore, google-auth)
            raise SourceError(
                f"cannot list source pattern {pattern!r}: {error} ({type(error).__name__}); "
                f"{_ACCESS_HINT}"
            ) from error
        if not matches:
            raise FileNotFoundError(
                f"source pattern {pattern!r} matches no file; give a file, a folder, a glob "
                "such as 'data/**/*.jsonl.gz' or a URL such as 's3://bucket/prefix/*.parquet'"
            )
        for source_file in matches:
            found.setdefault(source_file.url, source_file)
    return [found[url] for url in sorted(found)]


def _stat(fs: AbstractFileSystem, path: str, url: str) -> SourceFile:
    try:
        info = fs.info(path)
    except Exception as error:  # the store's own error types (botocore, google-auth)
        raise _read_error(url, error) from error
    if info["type"] != "file":
        raise SourceError(f"{url} is a {info['type']}, not a file; list it with list_files")
    return _source_file(fs, path, info)


def stat_files(urls: Sequence[str]) -> list[SourceFile]:
    """The current :class:`SourceFile` of each URL; :class:`SourceError` if one is unreadable."""
    stats = []
    for url in urls:
        fs, path = _filesystem(url)
        stats.append(_stat(fs, path, url))
    return stats


# --------------------------------------------------------------------------- sharding
def plan_shards(
    files: Sequence[SourceFile],
    shard_bytes: int,
    previous: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, list[str]]:
    """Group ``files`` into shards of about ``shard_bytes``: shard key -> URLs.

    Stable as files are added: every URL of ``previous`` stays in its shard (keys and order
    kept); the other URLs, sorted, are packed greedily into new shards whose keys continue
    after the highest previous one (a file over ``shard_bytes`` is a shard of its own).
    Keys are 5-digit zero-padded numbers, so sorting them gives the order of creation.
    Files may only be added: a URL of ``previous`` that is not in ``files`` raises
    :class:`SourceError`.
    """
    if shard_bytes <= 0:
        raise ValueError(f"shard_bytes must be positive, got {shard_bytes}")
    previous = previous or {}
    sizes = {source_file.url: source_file.size for source_file in files}
    plan: dict[str, list[str]] = {}
    planned: set[str] = set()
    gone: list[str] = []
    for key in sorted(previous):
        if not (key.isdigit() and len(key) == 5):
            raise ValueError(f"previous shard key {key!r} is not a 5-digit number like '00000'")
        for url in previous[key]:
            if url in planned:
                raise ValueError(f"previous plan lists {url} in two shards (again in {key})")
            planned.add(url)
            if url not in sizes:
                gone.append(f"{url} (shard {key})")
        plan[key] = list(previous[key])
    if gone:
        raise SourceError(
            f"{len(gone)} file(s) of the previous shard plan are no longer in the source: "
            f"{', '.join(gone[:5])}{' ...' if len(gone) > 5 else ''}. Files may only be "
            "added to a source; to remove one, start a new plan (remove the source's plan entry)"
        )
    next_index = max((int(key) + 1 for key in plan), default=0)
    shard: list[str] = []
    shard_size = 0
    for url in sorted(set(sizes) - planned):
        if shard and shard_size + sizes[url] > shard_bytes:
            plan[f"{next_index:05d}"] = shard
            next_index += 1
            shard, shard_size = [], 0
        shard.append(url)
        shard_size += sizes[url]
    if shard:
        plan[f"{next_index:05d}"] = shard
    return plan


# --------------------------------------------------------------------------- records
class _StoreFile(io.RawIOBase):
    """A store's file object whose failures raise a :class:`SourceError` naming the URL.

    Readers turn their parsers' exceptions into :class:`Rejected` records; marking the
    store's own failures keeps a network or permission error from passing for bad content.
    """

    def __init__(self, handle: IO[bytes], url: str) -> None:
        super().__init__()
        self._handle = handle
        self._url = url

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        return self._call(self._handle.read, size)

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        return self._call(self._handle.seek, offset, whence)

    def tell(self) -> int:
        return self._call(self._handle.tell)

    def _call(self, method: Callable[..., Any], *args: int) -> Any:
        try:
            return method(*args)
        except Exception as error:  # the store's own error types (botocore, google-auth)
            raise _read_error(self._url, error) from error


def _to_document(value: Mapping[str, Any], fields: Fields) -> dict[str, Any] | str:
    """The document of a decoded record, or the reason it cannot be one."""
    # parse_record holds the id/text rules (an int id becomes a string, lone surrogates
    # are refused); it sees the mapped fields under their Dolma names.
    parsed = parse_record(
        RawRecord("", 0, {"id": value.get(fields.id), "text": value.get(fields.text)}), ""
    )
    if isinstance(parsed, ReadError):
        if (fields.id, fields.text) == ("id", "text"):
            return parsed.reason
        return f"{parsed.reason} (id is read from {fields.id!r}, text from {fields.text!r})"
    metadata = value.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        return f"'metadata' must be an object, got {type(metadata).__name__} (id {parsed.id!r})"
    metadata = dict(metadata)
    for name in fields.metadata:
        if name in value:
            metadata[name] = value[name]
    if fields.url is not None and value.get(fields.url) is not None:
        metadata["url"] = value[fields.url]
    document = {"id": parsed.id, "text": parsed.text, "metadata": metadata}
    document.update((key, value[key]) for key in _PASSTHROUGH if value.get(key) is not None)
    return document


def _chunks(handle: _StoreFile, compression: str | None) -> Iterator[bytes]:
    if compression == "zstd":
        yield from zstd_chunks(handle)
        return
    # read1 hands over what gzip decoded before a fault, so the lines before it are kept.
    read = gzip.GzipFile(fileobj=handle).read1 if compression == "gzip" else handle.read
    while chunk := read(_CHUNK_BYTES):
        yield chunk


def _read_dolma(
    handle: _StoreFile, source_file: SourceFile, fields: Fields, stats: ReadStats
) -> Iterator[dict[str, Any] | Rejected]:
    url = source_file.url
    compression = infer_compression(url)
    if compression not in (None, "gzip", "zstd"):
        stats.records += 1  # what could not be read of the file: one record
        yield Rejected(url, None, f"{compression} compression is not read; use .gz or .zst", b"")
        return
    line = 0
    try:
        for raw in _split_lines(_chunks(handle, compression)):
            line += 1
            stats.records += 1
            value = _decode(RawRecord(url, line, raw))
            outcome = value if isinstance(value, str) else _to_document(value, fields)
            yield Rejected(url, line, outcome, raw) if isinstance(outcome, str) else outcome
    except (gzip.BadGzipFile, EOFError, zlib.error, zstandard.ZstdError) as error:
        kind = "truncated" if isinstance(error, EOFError) else "corrupt"
        stats.records += 1  # what could not be read of the file: one record
        yield Rejected(url, line + 1, f"{kind} compressed stream after line {line}: {error}", b"")


def _read_parquet(
    handle: _StoreFile, source_file: SourceFile, fields: Fields, stats: ReadStats
) -> Iterator[dict[str, Any] | Rejected]:
    url = source_file.url
    row = 0
    try:
        parquet = pq.ParquetFile(handle)
        names = parquet.schema_arrow.names
        wanted = [fields.id, fields.text, *fields.metadata, *([fields.url] if fields.url else [])]
        missing = [name for name in dict.fromkeys(wanted) if name not in names]
        if missing:
            reason = (
                f"Parquet file has no column {', '.join(map(repr, missing))} (columns: {names})"
            )
            stats.records += 1  # what could not be read of the file: one record
            yield Rejected(url, None, f"{reason}; fix the source's fields", b"")
            return
        extra = [name for name in (*_PASSTHROUGH, "metadata") if name in names]
        columns = list(dict.fromkeys([*wanted, *extra]))
        # A batch of rows at a time, only the columns used: memory stays bounded.
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns):
            for value in batch.to_pylist():
                row += 1
                stats.records += 1
                outcome = _to_document(value, fields)
                if isinstance(outcome, str):
                    raw = json.dumps(value, default=str).encode()
                    yield Rejected(url, row, outcome, raw)
                else:
                    yield outcome
    except pa.ArrowException as error:
        stats.records += 1  # what could not be read of the file: one record
        yield Rejected(url, row + 1 if row else None, f"unreadable Parquet file: {error}", b"")


def _charset(name: str | None) -> str | None:
    """Python's codec for a declared charset, or None if unknown."""
    if not name:
        return None
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        return None
    return _WHATWG_ALIASES.get(codec, codec)


def _decode_html(body: bytes, declared: str | None = None) -> str:
    """A page's text: by its byte-order mark, else the declared (HTTP) charset, else its
    ``<meta>`` charset, else UTF-8; undecodable bytes become U+FFFD."""
    for bom, encoding in _BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(encoding, "replace")
    meta = _META_CHARSET.search(body[:_META_PRESCAN_BYTES])
    meta_charset = meta.group(1).decode("ascii", "replace") if meta else None
    encoding = _charset(declared) or _charset(meta_charset) or "utf-8"
    return body.decode(encoding, "replace")


def _read_html(
    handle: _StoreFile, source_file: SourceFile, fields: Fields, stats: ReadStats
) -> Iterator[dict[str, Any] | Rejected]:
    # A page is one document, so it is read whole (unlike the record formats).
    body = handle.read()
    if body:
        stats.records += 1
        url = source_file.url
        yield {"id": url, "text": _decode_html(body), "metadata": {"url": url}}


def _warc_page(record: Any, stats: ReadStats) -> dict[str, Any] | None:
    """The document of an HTML response record; other records are counted as skipped."""
    if record.rec_type != "response":
        stats.skip(f"{record.rec_type} record")
        return None
    content_type = record.http_headers.get_header("Content-Type") if record.http_headers else None
    header = email.message.Message()
    header["Content-Type"] = content_type or "application/octet-stream"
    if header.get_content_type() not in _HTML_TYPES:
        stats.skip(SKIPPED_NON_HTML)
        return None
    body = record.content_stream().read()
    headers = record.rec_headers
    return {
        "id": headers.get_header("WARC-Record-ID"),
        "text": _decode_html(body, header.get_content_charset()),
        "metadata": {
            "url": headers.get_header("WARC-Target-URI"),
            "warc_date": headers.get_header("WARC-Date"),
            "content_type": content_type,
        },
    }


def _read_warc(
    handle: _StoreFile, source_file: SourceFile, fields: Fields, stats: ReadStats
) -> Iterator[dict[str, Any] | Rejected]:
    url = source_file.url
    # check_digests: a record whose bytes do not match its WARC digest is corrupt.
    archive = ArchiveIterator(handle, check_digests="raise")
    # The record being read: counted once, and if it fails, quarantined instead of skipped.
    open_record = False
    skipped_before: dict[str, int] = {}
    try:
        for record in archive:
            stats.records += 1
            open_record, skipped_before = True, dict(stats.skipped)
            if record.length is None:
                raise ArchiveLoadFailed("no Content-Length (the file may end inside its headers)")
            page = _warc_page(record, stats)
            while record.raw_stream.read(_CHUNK_BYTES):
                pass
            if record.raw_stream.limit > 0:  # fewer bytes than its Content-Length
                raise EOFError("the file ends inside the record")
            open_record = False
            if page is not None:
                yield page
        # warcio ends quietly when the file stops inside a record's headers.
        if archive.offset < source_file.size:
            raise EOFError("the file ends inside the record's headers")
    except _CORRUPT_WARC as error:
        # archive.offset is where the record being read starts (in the stored file).
        offset = archive.offset
        kind = "truncated" if isinstance(error, EOFError) else "corrupt"
        if isinstance(error, AttributeError | ValueError):
            error_text = f"warcio cannot parse it ({type(error).__name__}: {error})"
        else:
            error_text = str(error)
        if not open_record:
            stats.records += 1
        else:  # counted already; skipped, then found broken, it is quarantined instead
            stats.skipped.clear()
            stats.skipped.update(skipped_before)
        yield Rejected(url, offset, f"{kind} WARC record at byte {offset}: {error_text}", b"")


_Reader = Callable[[_StoreFile, SourceFile, Fields, ReadStats], Iterator[dict[str, Any] | Rejected]]
_READERS: dict[str, _Reader] = {
    "dolma": _read_dolma,
    "parquet": _read_parquet,
    "html": _read_html,
    "warc": _read_warc,
}


# --------------------------------------------------------------------------- reading
def _check_unchanged(fs: AbstractFileSystem, path: str, listed: SourceFile, when: str) -> None:
    current = _stat(fs, path, listed.url)
    if (current.size, current.fingerprint) != (listed.size, listed.fingerprint):
        raise FileChangedError(
            f"{listed.url} changed while being read: listed as {listed.fingerprint} "
            f"({listed.size} bytes), {when} {current.fingerprint} ({current.size} bytes); "
            "the shard fails rather than mixing versions. Read it again once the file is stable"
        )


def _read_file(
    source_file: SourceFile, reader: _Reader, fields: Fields, stats: ReadStats
) -> Iterator[dict[str, Any] | Rejected]:
    url = source_file.url
    fs, path = _filesystem(url)
    _check_unchanged(fs, path, source_file, "before reading")
    try:
        handle = fs.open(path, "rb")
    except Exception as error:  # the store's own error types (botocore, google-auth)
        raise _read_error(url, error) from error
    records_before = stats.records
    produced = False
    with handle:
        try:
            for item in reader(_StoreFile(handle, url), source_file, fields, stats):
                produced = True
                if isinstance(item, Rejected):
                    stats.rejected += 1
                else:
                    stats.documents += 1
                yield item
        except SourceError:
            # A read that fails because the object was replaced says so.
            _check_unchanged(fs, path, source_file, "when its read failed")
            raise
    if not produced and stats.records == records_before:
        # The file itself is the one record, quarantined: the counts still add up.
        stats.records += 1
        stats.rejected += 1
        yield Rejected(url, None, "empty file: no records", b"")
    _check_unchanged(fs, path, source_file, "after reading")
    stats.files += 1
    stats.bytes_read += source_file.size


def iter_documents(
    files: Sequence[SourceFile],
    format: str,
    fields: Fields = Fields(),
    stats: ReadStats | None = None,
) -> Iterator[dict[str, Any] | Rejected]:
    """The documents of ``files`` in file order then record order, with the rejected records.

    A document is ``{"id", "text", "metadata"}`` plus ``"added"``/``"created"`` when the
    record has them. ``dolma``: JSON lines (plain, ``.gz``, ``.zst``), ``fields`` mapping the
    keys and the record's own ``metadata`` dict kept. ``parquet``: columns mapped by
    ``fields``. ``html``: one page per file, id and ``metadata["url"]`` the file's URL.
    ``warc``: each HTML ``response`` record, id its ``WARC-Record-ID``, metadata its
    ``url``, ``warc_date`` and ``content_type``; other records are counted in
    ``stats.skipped``. ``fields`` applies to ``dolma`` and ``parquet`` only.

    Each file is compared with its :class:`SourceFile` before and after it is read:
    :class:`FileChangedError` if it changed, :class:`SourceError` if it cannot be read.
    ``stats``, if given, is filled in as the iterator advances.
    """
    if format not in FORMATS:
        raise ValueError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    if fields != Fields() and format in ("html", "warc"):
        warnings.warn(f"fields {fields} are ignored for format {format!r}", stacklevel=2)
    return _iter_documents(
        files, _READERS[format], fields, stats if stats is not None else ReadStats()
    )


def _iter_documents(
    files: Sequence[SourceFile], reader: _Reader, fields: Fields, stats: ReadStats
) -> Iterator[dict[str, Any] | Rejected]:
    for source_file in files:
        yield from _read_file(source_file, reader, fields, stats)
