"""A few documents to show on an asset page, so a reader can see what a number counts.

Steps and checks report tables of example documents (a raw source's first documents, what a
filter removed, what decontamination flagged, the documents of a checkpoint's last training
batches). This module reads those documents back and cuts them to table cells: at most
:data:`MAX_ROWS` rows, each text cut to :data:`PREVIEW_CHARS` characters.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from olmo_assets.lab.steps.results import Rows

__all__ = [
    "MAX_ROWS",
    "PREVIEW_CHARS",
    "batch_document_rows",
    "document_row",
    "raw_documents",
    "spread",
    "text_start",
]

MAX_ROWS = 20
"""Rows in one example table: enough to see a pattern, few enough to read on the page."""
PREVIEW_CHARS = 200
"""Characters of a document's text shown in a table cell."""
_DECODED_TOKENS = 256
"""Tokens decoded for a text start: more than :data:`PREVIEW_CHARS` characters need."""


def text_start(text: str, limit: int = PREVIEW_CHARS) -> str:
    """The start of ``text`` for one table cell: runs of whitespace (newlines included) made
    one space, cut to ``limit`` characters ending in "…" when it was longer."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def document_row(doc: dict[str, Any]) -> dict[str, Any]:
    """One Dolma document as a row: ``id``, ``characters``, each metadata key (``url``,
    ``path``, ...) and ``text_start``."""
    metadata = doc.get("metadata")
    extra = metadata if isinstance(metadata, dict) else {}
    return {
        "id": doc["id"],
        "characters": len(doc["text"]),
        **extra,
        "text_start": text_start(doc["text"]),
    }


def raw_documents(where: Path | list[Path], ids: Collection[str]) -> dict[str, str]:
    """The text of the documents ``ids`` in Dolma ``jsonl.gz`` files (a folder of them, or a
    list; the first of a repeated id); the reading stops once all are found."""
    from olmo_nn.data import read_documents

    wanted = set(ids)
    found: dict[str, str] = {}
    if not wanted:
        return found
    files = sorted(where.glob("*.jsonl.gz")) if isinstance(where, Path) else where
    if not files:
        raise FileNotFoundError(f"{where} holds no documents (*.jsonl.gz)")
    for doc in read_documents(files):
        if doc.id in wanted and doc.id not in found:
            found[doc.id] = doc.text
            if len(found) == len(wanted):
                break
    return found


def spread(groups: dict[Any, list[Any]], *, per_group: int, limit: int = MAX_ROWS) -> list[Any]:
    """Examples from every group in turn (the first of each, then the second, ...), at most
    ``per_group`` of one group and ``limit`` in all; returned group by group, in the groups'
    order, so a table shows every group before it shows more of one."""
    chosen: dict[Any, list[Any]] = {key: [] for key in groups}
    total = 0
    for depth in range(per_group):
        for key, items in groups.items():
            if depth < len(items) and total < limit:
                chosen[key].append(items[depth])
                total += 1
    return [item for items in chosen.values() for item in items]


def _decoded_starts(documents: Iterable[tuple[str, int]]) -> Iterator[str]:
    """The text start of each ``(token-shard folder, document index)``, decoded from its
    tokens with the tokenizer the folder's manifest names (verified by fingerprint)."""
    from olmo_nn.data import TokenShards
    from olmo_nn.tokenizer import Tokenizer

    shards: dict[str, TokenShards] = {}
    tokenizers: dict[str, Tokenizer] = {}
    for folder, index in documents:
        if folder not in shards:
            name = TokenShards(folder).tokenizer_name
            if name not in tokenizers:
                tokenizers[name] = Tokenizer.from_name_or_path(name)
            shards[folder] = TokenShards(folder, tokenizer=tokenizers[name])
        folder_shards = shards[folder]
        tokens = folder_shards.document_tokens(index)[:_DECODED_TOKENS]
        text = tokenizers[folder_shards.tokenizer_name].decode(tokens, skip_special_tokens=True)
        yield text_start(text)


def batch_document_rows(
    run_dir: Path, last_step: int, *, limit: int = MAX_ROWS
) -> tuple[Rows, bool | None]:
    """The documents of a training run's global batches, from ``last_step`` back (the most
    recent first), as ``olmo batch`` reconstructs them: ``step, row, instance, source,
    document``, ``offset`` and ``tokens`` (where the instance's part of the document begins
    in it, and its length) and ``text_start`` (the document's start, decoded from the token
    shards); at most ``limit`` rows. Also whether
    every batch shown recomputes to the fingerprint the run logged (None: none logged)."""
    from olmo_nn.train.batch import reconstruct_batch

    rows: Rows = []
    where: list[tuple[str, int]] = []
    matches: list[bool | None] = []
    for step in range(last_step, 0, -1):
        batch = reconstruct_batch(run_dir, step)
        matches.append(batch.matches)
        for item in batch.instances:
            for doc in item.documents[: limit - len(rows)]:
                rows.append(
                    {
                        "step": step,
                        "row": item.position,
                        "instance": item.instance,
                        "source": doc.source,
                        "document": doc.id,
                        "offset": doc.offset,
                        "tokens": doc.end - doc.start,
                    }
                )
                where.append((item.folder, doc.index))
        if len(rows) >= limit:
            break
    for row, start in zip(rows, _decoded_starts(where), strict=True):
        row["text_start"] = start
    logged = [m for m in matches if m is not None]
    return rows, all(logged) if logged else None
