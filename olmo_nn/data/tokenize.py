"""Tokenize Dolma documents into token shards: the work behind ``olmo data tokenize``.

The pipeline streams: the main process decompresses and splits the input into batches of
raw records (at most ``batch_size`` documents or 1 MB each), workers parse and encode
each batch, and the main process writes the results in input order with a
:class:`~olmo_nn.data.shards.ShardWriter`. At most ``2 × workers`` batches are in flight,
so memory stays bounded whatever the input size, and the output is byte-identical for
any number of workers.

Worker model: ``workers > 1`` runs a pool of worker *processes*, each with its own
single-threaded tokenizer; batches are submitted and collected in order through a bounded
window. Measured on the 2-core development machine with 100 MB of Python source as JSON
lines (OLMo's tokenizer): ``workers=1`` 15 MB/s; two worker processes 26 MB/s; two threads
sharing one tokenizer 13 MB/s. Threads lose because only the BPE core releases the GIL —
JSON decoding, NFC checks and array handling do not — and the main thread (reading,
writing) competes for it; separate processes scale with the cores. Workers are forked
where the platform forks (Linux): they inherit the already-built tokenizer and start in
milliseconds, where ``spawn`` pays ~2 s per run to import and rebuild it (20 MB took 2.9 s
with ``spawn``, 0.8 s with ``fork``). They are forked before this module starts any
thread of its own. ``workers == 1`` runs everything in the calling thread.

Bad input lines are written to ``errors.jsonl`` in the output folder — one JSON object per
line, ``{"file": ..., "line": ..., "reason": ...}`` (``line`` is ``null`` for a whole-file
error) — and counted in the manifest. ``strict=True`` raises a
:class:`~olmo_nn.data.documents.DocumentError` at the first one instead, leaving no output.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import numpy as np
from tqdm import tqdm

from olmo_nn.atomic import temporary_name
from olmo_nn.data.documents import (
    DocumentError,
    RawRecord,
    ReadError,
    iter_record_batches,
    parse_record,
    resolve_inputs,
)
from olmo_nn.data.shards import DEFAULT_MAX_TOKENS_PER_FILE, ShardWriter
from olmo_nn.data.workers import process_pool
from olmo_nn.tokenizer import Tokenizer

__all__ = ["ERRORS_NAME", "TokenizeSummary", "tokenize_documents"]

ERRORS_NAME = "errors.jsonl"
DEFAULT_BATCH_SIZE = 1000
_MAX_BATCH_BYTES = 1 << 20


class _EncodedDocument(NamedTuple):
    id: str
    source: str
    path: str
    line: int
    num_bytes: int


@dataclass
class _EncodedBatch:
    """A batch after parsing and encoding; ``tokens`` holds the documents' ids back to back."""

    items: list[_EncodedDocument | ReadError]
    tokens: np.ndarray
    lengths: np.ndarray


@dataclass
class TokenizeSummary:
    """What a tokenize run produced; :meth:`format` is the text the CLI prints."""

    output: Path
    num_files: int
    num_documents: int
    num_tokens: int
    num_bytes: int
    num_errors: int
    errors_path: Path
    seconds: float
    sources: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def mb_per_second(self) -> float:
        return self.num_bytes / 1e6 / max(self.seconds, 1e-9)

    def format(self) -> str:
        lines = [
            f"tokenized {self.num_documents:,} documents ({self.num_bytes / 1e6:,.1f} MB of text) "
            f"from {self.num_files:,} files into {self.num_tokens:,} tokens in {self.output}",
            f"  {self.seconds:.1f} s, {self.mb_per_second:.2f} MB/s",
        ]
        width = max((len(name) for name in self.sources), default=0)
        for name, totals in self.sources.items():
            lines.append(
                f"  {name or '(no source)':<{width}}  {totals['num_documents']:>12,} documents"
                f"  {totals['num_tokens']:>15,} tokens"
            )
        if self.num_errors:
            lines.append(f"  {self.num_errors:,} bad input records, listed in {self.errors_path}")
        else:
            lines.append("  no bad input records")
        return "\n".join(lines)


# --------------------------------------------------------------------------- workers
_worker_tokenizer: Tokenizer | None = None


def _init_worker(tokenizer: Tokenizer) -> None:
    global _worker_tokenizer
    tokenizer.num_threads = 1
    _worker_tokenizer = tokenizer


def _ready() -> bool:
    return _worker_tokenizer is not None


def _start_workers(tokenizer: Tokenizer, workers: int) -> Executor:
    """A process pool whose workers hold ``tokenizer``, all started before returning."""
    method = "fork" if sys.platform == "linux" else "spawn"
    executor = process_pool(workers, method, _init_worker, (tokenizer,))
    # The first task starts every worker (all at once under fork), so they are forked
    # before the progress bar's monitor thread exists.
    executor.submit(_ready).result()
    return executor


def _encode_batch(
    batch: list[RawRecord | ReadError],
    default_source: str | None,
    tokenizer: Tokenizer | None = None,
) -> _EncodedBatch:
    """Parse and encode one batch (in a worker process, or inline with ``tokenizer``)."""
    tok = tokenizer if tokenizer is not None else _worker_tokenizer
    assert tok is not None, "worker started without a tokenizer"
    items: list[_EncodedDocument | ReadError] = []
    texts: list[str] = []
    for record in batch:
        parsed = record if isinstance(record, ReadError) else parse_record(record, default_source)
        if isinstance(parsed, ReadError):
            items.append(parsed)
            continue
        texts.append(parsed.text)
        num_bytes = len(parsed.text.encode("utf-8"))
        items.append(
            _EncodedDocument(parsed.id, parsed.source, parsed.path, parsed.line, num_bytes)
        )
    # One text per call keeps the encoding on this thread (a worker is one core's worth).
    arrays = [tok.encode_batch_arrays([text])[0] for text in texts]
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint32)
    return _EncodedBatch(items, tokens, lengths)


def _ordered_map(
    executor: Executor | None,
    fn: Callable[..., _EncodedBatch],
    batches: Iterable[list[RawRecord | ReadError]],
    window: int,
    *args: Any,
) -> Iterator[_EncodedBatch]:
    """``fn(batch, *args)`` for each batch, in order, with at most ``window`` in flight."""
    if executor is None:
        for batch in batches:
            yield fn(batch, *args)
        return
    pending: deque[Future[_EncodedBatch]] = deque()
    for batch in batches:
        pending.append(executor.submit(fn, batch, *args))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# --------------------------------------------------------------------------- pipeline
def _write_batch(
    batch: _EncodedBatch, writer: ShardWriter, errors_file: TextIO, strict: bool
) -> tuple[int, int]:
    """Write a batch's documents and errors in order; returns (errors, text bytes)."""
    offsets = np.concatenate([[0], np.cumsum(batch.lengths)])
    position = num_errors = num_bytes = 0
    for item in batch.items:
        if isinstance(item, ReadError):
            if strict:
                raise DocumentError(item)
            num_errors += 1
            errors_file.write(json.dumps(item.to_dict(), ensure_ascii=False) + "\n")
            continue
        tokens = batch.tokens[offsets[position] : offsets[position + 1]]
        position += 1
        writer.write(tokens, id=item.id, source=item.source, path=item.path, line=item.line)
        num_bytes += item.num_bytes
    return num_errors, num_bytes


def tokenize_documents(
    inputs: Iterable[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    tokenizer: Tokenizer | str | os.PathLike[str] | None = None,
    workers: int = 1,
    max_tokens_per_file: int = DEFAULT_MAX_TOKENS_PER_FILE,
    source: str | None = None,
    strict: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    overwrite: bool = False,
    progress: bool | None = False,
) -> TokenizeSummary:
    """Tokenize the documents under ``inputs`` into a token-shard folder ``output``.

    ``tokenizer`` is a :class:`Tokenizer` or a name/path for
    :meth:`Tokenizer.from_name_or_path` (``None``: OLMo's). ``source`` names the source of
    documents that carry none (default: their file's parent folder). ``progress``: ``True``
    shows a bar, ``None`` shows it only on a terminal.

    Raises ``FileNotFoundError`` for missing inputs, ``ValueError`` for bad options, an
    output folder that already holds a shard set (unless ``overwrite``) or inputs whose
    records were all rejected (only ``errors.jsonl``, listing them, is written), and
    :class:`DocumentError` at the first bad record when ``strict``; nothing else is left in
    ``output`` after an exception.
    """
    if workers < 1:
        raise ValueError(f"workers={workers}: must be at least 1")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be at least 1 document")
    started = time.perf_counter()
    files = resolve_inputs(inputs)
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.from_name_or_path(tokenizer)
    output = Path(output)
    writer = ShardWriter.for_tokenizer(
        output, tok, max_tokens_per_file=max_tokens_per_file, overwrite=overwrite
    )
    errors_tmp = temporary_name(output / ERRORS_NAME)
    executor: Executor | None = None
    num_errors = num_bytes = 0
    try:
        if workers > 1:
            executor = _start_workers(tok, workers)
            results = _ordered_map(
                executor,
                _encode_batch,
                iter_record_batches(files, batch_size, _MAX_BATCH_BYTES),
                2 * workers,
                source,
            )
        else:
            results = _ordered_map(
                None,
                _encode_batch,
                iter_record_batches(files, batch_size, _MAX_BATCH_BYTES),
                1,
                source,
                tok,
            )
        with (
            errors_tmp.open("w", encoding="utf-8") as errors_file,
            tqdm(
                desc="tokenize",
                unit="B",
                unit_scale=True,
                disable=None if progress is None else not progress,
            ) as bar,
        ):
            for batch in results:
                batch_errors, batch_bytes = _write_batch(batch, writer, errors_file, strict)
                num_errors += batch_errors
                num_bytes += batch_bytes
                bar.update(batch_bytes)
                bar.set_postfix(documents=writer.num_documents, errors=num_errors, refresh=False)
        writer.num_errors = num_errors
        errors_tmp.replace(output / ERRORS_NAME)
        if num_errors and not writer.num_documents:
            raise ValueError(
                f"all {num_errors:,} input records were rejected, so no token shards were "
                f"written to {output}; {output / ERRORS_NAME} lists each one's file, line and "
                "reason"
            )
        writer.close()
    except BaseException:
        writer.abort()
        errors_tmp.unlink(missing_ok=True)
        raise
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    manifest = writer.manifest()
    return TokenizeSummary(
        output=output,
        num_files=len(files),
        num_documents=manifest["num_documents"],
        num_tokens=manifest["num_tokens"],
        num_bytes=num_bytes,
        num_errors=num_errors,
        errors_path=output / ERRORS_NAME,
        seconds=time.perf_counter() - started,
        sources=manifest["sources"],
    )
