"""Token shards: OLMo's on-disk training data, written atomically and read back by memmap.

A shard folder holds:

* ``part-00000.npy``, ``part-00001.npy``, …: raw little-endian token ids, no ``.npy``
  header (exactly what ``np.memmap(path, dtype=..., mode="r")`` reads, as OLMo's
  ``MemMapDataset`` and OLMo-core's numpy datasets do). uint16 when the vocabulary has at
  most 65536 ids, else uint32. Documents are concatenated, each followed by EOS; a new file
  starts once the next document would take the current one past ``max_tokens_per_file``
  (a document is never split; one longer than the limit gets a file of its own).
* ``part-00000.csv.gz``, …: Dolma's companion metadata, one headerless CSV row per document,
  ``start,end,id,src,loc`` — token offsets in the file (end exclusive, EOS included), the
  document id, and, as the Dolma toolkit writes them, the input file's path and 1-based line.
* ``index.parquet``: the document index, one row per document in order — ``file``,
  ``start``, ``end`` (same offsets), ``source``, ``id``.
* ``manifest.json``: format version, tokenizer (name, fingerprint, vocab size, EOS), dtype,
  per-file token counts and sha256, totals per source, and the error count. It is written
  last: a folder without it is not a finished shard set.

:class:`ShardWriter` writes such a folder; :class:`TokenShards` reads one.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from olmo_nn.atomic import remove_dead_temporaries, temporary_name

if TYPE_CHECKING:
    from olmo_nn.tokenizer import Tokenizer

__all__ = [
    "DEFAULT_MAX_TOKENS_PER_FILE",
    "FORMAT_VERSION",
    "INDEX_NAME",
    "MANIFEST_NAME",
    "DocumentSpan",
    "ShardWriter",
    "TokenShards",
    "token_dtype",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.parquet"
DEFAULT_MAX_TOKENS_PER_FILE = 1 << 30
_PART_RE = re.compile(r"^part-\d{5}\.(npy|csv\.gz)$")
_INDEX_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("source", pa.string()),
        ("id", pa.string()),
    ]
)
_INDEX_ROWS_PER_GROUP = 1 << 16


def _index_table(rows: dict[str, list[Any]]) -> pa.Table:
    """The index rows as an Arrow table, built from buffers: ``pa.table`` and ``pa.array`` on
    Python lists import pandas (~0.5 s, a tenth of a short ``olmo data tokenize``)."""
    arrays = []
    for field_ in _INDEX_SCHEMA:
        values = rows[field_.name]
        if field_.type == pa.string():
            encoded = [value.encode("utf-8") for value in values]
            offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
            np.cumsum([len(item) for item in encoded], out=offsets[1:])
            buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
        else:
            buffers = [None, pa.py_buffer(np.asarray(values, dtype=np.int64))]
        arrays.append(pa.Array.from_buffers(field_.type, len(values), buffers))
    return pa.Table.from_arrays(arrays, schema=_INDEX_SCHEMA)


def token_dtype(vocab_size: int) -> np.dtype:
    """Little-endian uint16 when every id fits (``vocab_size <= 65536``), else uint32."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size={vocab_size}: must be positive")
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def part_name(index: int, suffix: str = ".npy") -> str:
    """Dolma's file name for token file ``index``: ``part-00000.npy``."""
    return f"part-{index:05d}{suffix}"


class _OpenPart:
    """A token file and its metadata file being written under temporary names."""

    def __init__(self, folder: Path, index: int, dtype: np.dtype) -> None:
        self.index = index
        self.name = part_name(index)
        self.meta_name = part_name(index, ".csv.gz")
        self.tmp_path = temporary_name(folder / self.name)
        self.tmp_meta_path = temporary_name(folder / self.meta_name)
        self.dtype = dtype
        self.num_tokens = 0
        self.num_documents = 0
        self.sha256 = hashlib.sha256()
        self.handle = self.tmp_path.open("wb")
        # mtime=0 and no file name in the gzip header: same input, same bytes.
        self._meta_raw = self.tmp_meta_path.open("wb")
        self._meta_gzip = gzip.GzipFile(filename="", fileobj=self._meta_raw, mode="wb", mtime=0)
        self._meta_text = io.TextIOWrapper(self._meta_gzip, encoding="utf-8", newline="")
        self.meta = csv.writer(self._meta_text, lineterminator="\n")

    def append(self, tokens: np.ndarray) -> None:
        data = tokens.tobytes()
        self.handle.write(data)
        self.sha256.update(data)
        self.num_tokens += len(tokens)
        self.num_documents += 1

    def close(self) -> None:
        self.handle.close()
        self._meta_text.close()
        self._meta_raw.close()

    def discard(self) -> None:
        self.close()
        self.tmp_path.unlink(missing_ok=True)
        self.tmp_meta_path.unlink(missing_ok=True)


class ShardWriter:
    """Write documents' token ids into a shard folder (a context manager).

    ``write`` appends EOS to each document. Files are written under temporary names and
    renamed into place when the ``with`` block ends without an exception; the manifest
    comes last. If the block raises (or :meth:`abort` is called), every temporary file is
    removed and a shard set already in the folder is left as it was.

    A folder that already holds a finished shard set (a ``manifest.json``) is refused
    unless ``overwrite=True``; then the old set is replaced when the new one is complete.
    Set :attr:`num_errors` (read errors met upstream) before closing to record it.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        vocab_size: int,
        eos_token_id: int,
        tokenizer_name: str = "",
        tokenizer_fingerprint: str = "",
        max_tokens_per_file: int = DEFAULT_MAX_TOKENS_PER_FILE,
        overwrite: bool = False,
    ) -> None:
        if max_tokens_per_file <= 0:
            raise ValueError(f"max_tokens_per_file={max_tokens_per_file}: must be positive")
        if not 0 <= eos_token_id < vocab_size:
            raise ValueError(
                f"eos_token_id={eos_token_id} is outside the vocabulary (0..{vocab_size - 1})"
            )
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(
                f"output {self.directory} is a file, not a folder; choose a folder for the shards"
            )
        if (self.directory / MANIFEST_NAME).exists() and not overwrite:
            raise ValueError(
                f"{self.directory} already holds a finished shard set ({MANIFEST_NAME}); "
                "choose another output folder or pass overwrite=True (--overwrite)"
            )
        self.vocab_size = vocab_size
        self.eos_token_id = eos_token_id
        self.tokenizer_name = tokenizer_name
        self.tokenizer_fingerprint = tokenizer_fingerprint
        self.max_tokens_per_file = max_tokens_per_file
        self.dtype = token_dtype(vocab_size)
        self.num_errors = 0
        self._eos = np.array([eos_token_id], dtype=self.dtype)
        self._parts: list[_OpenPart] = []
        self._sources: dict[str, dict[str, int]] = {}
        self._rows: dict[str, list[Any]] = {name: [] for name in _INDEX_SCHEMA.names}
        self._index_tmp = temporary_name(self.directory / INDEX_NAME)
        self._manifest_tmp = temporary_name(self.directory / MANIFEST_NAME)
        self._index: pq.ParquetWriter | None = None
        self._closed = False
        self.directory.mkdir(parents=True, exist_ok=True)
        remove_dead_temporaries(self.directory)

    @classmethod
    def for_tokenizer(
        cls, directory: str | os.PathLike[str], tokenizer: Tokenizer, **kwargs: Any
    ) -> ShardWriter:
        """A writer whose vocabulary, EOS and recorded fingerprint come from ``tokenizer``."""
        if tokenizer.eos_token_id is None:
            raise ValueError(
                f"tokenizer {tokenizer.name!r} has no EOS token; token shards need one"
            )
        return cls(
            directory,
            vocab_size=tokenizer.vocab_size,
            eos_token_id=tokenizer.eos_token_id,
            tokenizer_name=tokenizer.name,
            tokenizer_fingerprint=tokenizer.fingerprint,
            **kwargs,
        )

    # ----------------------------------------------------------------- writing
    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def num_documents(self) -> int:
        return sum(p.num_documents for p in self._parts)

    @property
    def num_tokens(self) -> int:
        return sum(p.num_tokens for p in self._parts)

    def write(
        self,
        tokens: np.ndarray | Sequence[int],
        *,
        id: str,
        source: str,
        path: str = "",
        line: int = 0,
    ) -> None:
        """Append one document's ids (without EOS; EOS is added here).

        ``path`` and ``line`` say where the document was read (Dolma's ``src`` and ``loc``
        in the ``.csv.gz``). Raises ``ValueError`` naming the document and the id when a
        token id is negative or ``>= vocab_size``; nothing of that document is written.
        """
        if self._closed:
            raise ValueError(f"ShardWriter for {self.directory} is closed; open a new one")
        array = np.asarray(tokens)
        if array.ndim != 1:
            raise ValueError(
                f"document {id!r}: expected a 1-D sequence of token ids, got shape {array.shape}"
            )
        if array.size:
            if array.dtype.kind not in "iu":
                raise ValueError(
                    f"document {id!r}: token ids must be integers, got dtype {array.dtype}"
                )
            low, high = int(array.min()), int(array.max())
            if low < 0 or high >= self.vocab_size:
                bad = low if low < 0 else high
                raise ValueError(
                    f"document {id!r}: token id {bad} is outside the vocabulary "
                    f"(0..{self.vocab_size - 1}); was it encoded with another tokenizer?"
                )
        length = len(array) + 1
        part = self._parts[-1] if self._parts else None
        if part is None or (
            part.num_tokens and part.num_tokens + length > self.max_tokens_per_file
        ):
            part = self._new_part()
        start = part.num_tokens
        part.append(np.concatenate([array.astype(self.dtype, copy=False), self._eos]))
        part.meta.writerow([start, start + length, id, path, line])
        self._add_index_row(part.name, start, start + length, source, id)
        totals = self._sources.setdefault(source, {"num_documents": 0, "num_tokens": 0})
        totals["num_documents"] += 1
        totals["num_tokens"] += length

    def _new_part(self) -> _OpenPart:
        if self._parts:
            self._parts[-1].close()
        part = _OpenPart(self.directory, len(self._parts), self.dtype)
        self._parts.append(part)
        return part

    def _add_index_row(self, file: str, start: int, end: int, source: str, doc_id: str) -> None:
        for name, value in zip(
            _INDEX_SCHEMA.names, (file, start, end, source, doc_id), strict=True
        ):
            self._rows[name].append(value)
        if len(self._rows["id"]) >= _INDEX_ROWS_PER_GROUP:
            self._flush_index()

    def _flush_index(self) -> None:
        if self._index is None:
            self._index = pq.ParquetWriter(self._index_tmp, _INDEX_SCHEMA, compression="zstd")
        table = _index_table(self._rows)
        if table.num_rows:
            self._index.write_table(table)
        self._rows = {name: [] for name in _INDEX_SCHEMA.names}

    # ----------------------------------------------------------------- finishing
    def manifest(self) -> dict[str, Any]:
        """What ``manifest.json`` will hold (valid once all documents are written)."""
        return {
            "format": "olmo-token-shards",
            "format_version": FORMAT_VERSION,
            "tokenizer": {
                "name": self.tokenizer_name,
                "fingerprint": self.tokenizer_fingerprint,
                "vocab_size": self.vocab_size,
                "eos_token_id": self.eos_token_id,
            },
            "dtype": self.dtype.name,
            "byte_order": "little",
            "max_tokens_per_file": self.max_tokens_per_file,
            "files": [
                {
                    "path": part.name,
                    "metadata": part.meta_name,
                    "num_tokens": part.num_tokens,
                    "num_documents": part.num_documents,
                    "sha256": part.sha256.hexdigest(),
                }
                for part in self._parts
            ],
            "index": INDEX_NAME,
            "num_documents": self.num_documents,
            "num_tokens": self.num_tokens,
            "sources": {name: dict(self._sources[name]) for name in sorted(self._sources)},
            "num_errors": self.num_errors,
        }

    def close(self) -> None:
        """Finish: rename every file into place, replace an old set's files, write the manifest.

        If that fails, the temporary files are removed (:meth:`abort`) and the error raised.
        """
        if self._closed:
            return
        try:
            self._finish()
        except BaseException:
            self.abort()
            raise

    def _finish(self) -> None:
        self._flush_index()
        assert self._index is not None
        self._index.close()
        for part in self._parts:
            part.close()
        self._closed = True
        manifest = self.manifest()
        # The old set stops being "finished" before any of its files is replaced.
        (self.directory / MANIFEST_NAME).unlink(missing_ok=True)
        new_names = {p.name for p in self._parts} | {p.meta_name for p in self._parts}
        for stale in self.directory.iterdir():
            if _PART_RE.match(stale.name) and stale.name not in new_names:
                stale.unlink()
        for part in self._parts:
            part.tmp_path.replace(self.directory / part.name)
            part.tmp_meta_path.replace(self.directory / part.meta_name)
        self._index_tmp.replace(self.directory / INDEX_NAME)
        self._manifest_tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        self._manifest_tmp.replace(self.directory / MANIFEST_NAME)

    def abort(self) -> None:
        """Drop every temporary file; a shard set already in the folder is left as it was,
        unless a failed :meth:`close` had begun replacing it (then no manifest is left)."""
        self._closed = True
        for part in self._parts:
            part.discard()
        if self._index is not None:
            self._index.close()
        self._index_tmp.unlink(missing_ok=True)
        self._manifest_tmp.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class DocumentSpan:
    """Where one document lies: token ``file`` and ``[start, end)`` in it (EOS included)."""

    file: str
    start: int
    end: int
    source: str
    id: str


class TokenShards:
    """A finished shard folder, memory-mapped for reading.

    Raises ``FileNotFoundError`` when ``directory`` holds no ``manifest.json`` or a token
    file is missing, ``ValueError`` when a file's size disagrees with the manifest or (if
    ``tokenizer`` is given) the shards were built with a different tokenizer.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, tokenizer: Tokenizer | None = None
    ) -> None:
        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST_NAME
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"{self.directory} is not a token-shard folder (no {MANIFEST_NAME}); build one "
                f"with `olmo data tokenize INPUT... --output {self.directory}`"
            )
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
        version = self.manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{manifest_path}: format_version {version!r} is not supported (expected "
                f"{FORMAT_VERSION}); rebuild the shards with this version of the lab"
            )
        self.dtype = np.dtype(self.manifest["dtype"]).newbyteorder("<")
        self.files = [self.directory / f["path"] for f in self.manifest["files"]]
        self.file_num_tokens = np.array(
            [f["num_tokens"] for f in self.manifest["files"]], dtype=np.int64
        )
        for path, expected in zip(self.files, self.file_num_tokens, strict=True):
            if not path.is_file():
                raise FileNotFoundError(f"token file {path} named in {manifest_path} is missing")
            size = path.stat().st_size
            if size != int(expected) * self.dtype.itemsize:
                raise ValueError(
                    f"{path} holds {size} bytes but {manifest_path} says {int(expected)} "
                    f"{self.dtype.name} tokens; the folder is damaged, rebuild it"
                )
        #: Offset of each file's first token in the concatenation of all files.
        self.file_offsets = np.concatenate([[0], np.cumsum(self.file_num_tokens)]).astype(np.int64)
        if tokenizer is not None:
            self.check_tokenizer(tokenizer)

    # ----------------------------------------------------------------- properties
    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    @property
    def eos_token_id(self) -> int:
        return int(self.manifest["tokenizer"]["eos_token_id"])

    @property
    def tokenizer_name(self) -> str:
        return str(self.manifest["tokenizer"]["name"])

    @property
    def tokenizer_fingerprint(self) -> str:
        return str(self.manifest["tokenizer"]["fingerprint"])

    @property
    def num_tokens(self) -> int:
        return int(self.manifest["num_tokens"])

    @property
    def num_documents(self) -> int:
        return int(self.manifest["num_documents"])

    @property
    def num_errors(self) -> int:
        return int(self.manifest["num_errors"])

    def check_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Raise ``ValueError`` unless ``tokenizer`` is the one these shards were built with."""
        if tokenizer.fingerprint != self.tokenizer_fingerprint:
            raise ValueError(
                f"token shards in {self.directory} were built with tokenizer "
                f"{self.tokenizer_name!r} (fingerprint {self.tokenizer_fingerprint[:12]}, vocab "
                f"{self.vocab_size}), not {tokenizer.name!r} (fingerprint "
                f"{tokenizer.fingerprint[:12]}, vocab {tokenizer.vocab_size}); use that tokenizer "
                "or re-tokenize the documents with this one"
            )

    # ----------------------------------------------------------------- tokens
    @cached_property
    def memmaps(self) -> list[np.memmap]:
        """One read-only memmap per token file, in file order."""
        return [np.memmap(path, dtype=self.dtype, mode="r") for path in self.files]

    # ----------------------------------------------------------------- index
    @cached_property
    def index(self) -> pa.Table:
        """The document index: ``file``, ``start``, ``end``, ``source``, ``id``, one row per document."""
        return pq.read_table(self.directory / INDEX_NAME)

    @cached_property
    def index_arrays(self) -> dict[str, Any]:
        """The index as arrays for O(1)/O(log n) lookups.

        ``file`` (file number), ``start``, ``end``, ``global_start``, ``global_end``
        (offsets in the concatenation of all files, sorted) as int64 NumPy arrays;
        ``source`` and ``id`` as single-chunk Arrow arrays.
        """
        table = self.index
        file_number = {path.name: i for i, path in enumerate(self.files)}
        files = table.column("file").to_numpy(zero_copy_only=False)
        file_ids = np.fromiter((file_number[f] for f in files), dtype=np.int64, count=len(files))
        starts = table.column("start").to_numpy()
        ends = table.column("end").to_numpy()
        return {
            "file": file_ids,
            "start": starts,
            "end": ends,
            "global_start": self.file_offsets[file_ids] + starts,
            "global_end": self.file_offsets[file_ids] + ends,
            "source": table.column("source").combine_chunks(),
            "id": table.column("id").combine_chunks(),
        }

    def document(self, i: int) -> DocumentSpan:
        """Index row ``i`` (negative counts from the end)."""
        i = self._check_document(i)
        cols = self.index_arrays
        return DocumentSpan(
            file=self.files[int(cols["file"][i])].name,
            start=int(cols["start"][i]),
            end=int(cols["end"][i]),
            source=cols["source"][i].as_py(),
            id=cols["id"][i].as_py(),
        )

    def document_tokens(self, i: int) -> np.ndarray:
        """Token ids of document ``i`` with its EOS, a read-only view in the on-disk dtype."""
        i = self._check_document(i)
        cols = self.index_arrays
        return self.memmaps[int(cols["file"][i])][int(cols["start"][i]) : int(cols["end"][i])]

    def _check_document(self, i: int) -> int:
        n = self.num_documents
        if not -n <= i < n:
            raise IndexError(f"document {i} is out of range: {self.directory} holds {n} documents")
        return i % n

    def documents_overlapping(self, start: int, end: int) -> range:
        """Index rows of the documents overlapping global token range ``[start, end)``."""
        cols = self.index_arrays
        first = int(np.searchsorted(cols["global_end"], start, side="right"))
        stop = int(np.searchsorted(cols["global_start"], end, side="left"))
        return range(first, max(first, stop))

    def __repr__(self) -> str:
        return (
            f"TokenShards({str(self.directory)!r}, num_files={len(self.files)}, "
            f"num_documents={self.num_documents}, num_tokens={self.num_tokens}, "
            f"dtype={self.dtype.name}, tokenizer={self.tokenizer_name!r})"
        )
