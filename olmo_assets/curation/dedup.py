"""Exact deduplication with Bloom filters: URLs, whole texts and paragraphs (Dolma's ``dedupe``).

:class:`Deduplicator` tags each document with whether its URL, its full text, and which of
its paragraphs appeared earlier in the corpus. "Earlier" is what makes deduplication
reproducible: the first copy is kept and every later copy flagged, so the order in which
documents reach the filters is part of the result.

**Order contract.** Feed :meth:`Deduplicator.tag` the whole run in one fixed order: sources
in the order of the run's configuration, each source's files sorted by path, each file's
lines in order, one batch after another. One deduplicator (one set of filters) spans every
source of the run; :meth:`~Deduplicator.save` and :meth:`~Deduplicator.load` carry it across
runs. Batch boundaries do not matter (the filters answer in item order within a batch), the
order does: swap two copies and the other one is flagged. Feed only the documents that
survived the earlier stages if paragraphs of dropped documents should not count.

**Definitions.**

* URL: ``metadata["url"]`` (``metadata`` a JSON string or a struct column); normalized by
  stripping surrounding whitespace, lowercasing the scheme and host (not the user info,
  path or query) and dropping the ``#fragment``. Documents without one are never duplicates.
* Text: the full ``text``, exactly; whitespace-only texts are never duplicates.
* Paragraph: a piece of ``text.split("\\n")``, hashed exactly as it is (as Dolma's deduper
  does: no stripping, no case folding); empty and whitespace-only paragraphs are skipped and
  never count. A paragraph repeated within one document is flagged from its second copy.
  A paragraph's span runs from its first character through its terminating newline (the
  last paragraph has none), so deleting the spans leaves whole lines.
* Every key is an xxh3-128 digest of the UTF-8 bytes (:func:`.bloom.hash_strings`): xxhash
  is stable across versions, unlike Polars' ``hash``, and the filters are saved and reused.
  URLs, texts and paragraphs live in separate filters, so a one-line text never collides
  with its own paragraph.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import chain, compress
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import polars as pl

from olmo_assets.curation.bloom import BloomFilter, hash_strings
from olmo_assets.curation.taggers.base import Tagger, attribute, spans_column

__all__ = [
    "DedupConfig",
    "Deduplicator",
    "Paragraphs",
    "normalize_url",
    "split_paragraphs",
]

_CONFIG_FILE = "dedup.json"
_FILTER_FILES = {"urls": "urls.bloom", "texts": "texts.bloom", "paragraphs": "paragraphs.bloom"}


@dataclass(frozen=True, kw_only=True)
class DedupConfig:
    """Which duplicates to look for, and the capacities and error rate of the filters."""

    url: bool = True
    """Flag documents whose normalized URL appeared before (``url_duplicate``)."""
    exact: bool = True
    """Flag documents whose full text appeared before (``text_duplicate``)."""
    paragraphs: bool = True
    """Flag paragraphs that appeared before (the spans and the two fractions)."""
    expected_documents: int = 1_000_000
    """Documents the run will see: sizes the URL and text filters."""
    expected_paragraphs: int = 20_000_000
    """Non-blank paragraphs the run will see: sizes the paragraph filter."""
    false_positive_rate: float = 1e-5
    """Chance that a new item is wrongly flagged, at the expected capacity."""

    def __post_init__(self) -> None:
        if self.expected_documents <= 0:
            raise ValueError(f"expected_documents must be positive, got {self.expected_documents}")
        if self.expected_paragraphs <= 0:
            raise ValueError(
                f"expected_paragraphs must be positive, got {self.expected_paragraphs}"
            )
        if not 0.0 < self.false_positive_rate < 1.0:
            raise ValueError(
                f"false_positive_rate must be in (0, 1), got {self.false_positive_rate}"
            )
        if not (self.url or self.exact or self.paragraphs):
            raise ValueError("url, exact and paragraphs are all False: nothing to deduplicate")


def normalize_url(url: str) -> str | None:
    """Lowercase scheme and host, no fragment; ``None`` for an empty URL."""
    url = url.strip()
    if not url:
        return None
    parts = urlsplit(url)
    user_info, at, host = parts.netloc.rpartition("@")
    return urlunsplit(
        (parts.scheme.lower(), f"{user_info}{at}{host.lower()}", parts.path, parts.query, "")
    )


def _urls(docs: pl.DataFrame) -> list[str | None]:
    """The normalized ``metadata.url`` of each document (``None`` where absent)."""
    if "metadata" not in docs.columns:
        return [None] * docs.height
    metadata = docs.get_column("metadata")
    if metadata.dtype == pl.String:
        raw = metadata.str.json_path_match("$.url")
    elif isinstance(metadata.dtype, pl.Struct) and "url" in metadata.struct.fields:
        raw = metadata.struct.field("url").cast(pl.String)
    else:
        return [None] * docs.height
    return [None if url is None else normalize_url(url) for url in raw.to_list()]


@dataclass(frozen=True)
class Paragraphs:
    """The non-blank paragraphs of a batch, flattened in document then position order."""

    doc_index: np.ndarray
    """Row of the document each paragraph belongs to (int64, non-decreasing)."""
    start: np.ndarray
    """First character of each paragraph (int64)."""
    end: np.ndarray
    """One past its last character, terminating newline included (int64)."""
    text: list[str]
    """The paragraphs themselves, without the newline."""
    num_docs: int
    """Documents in the batch (some may have no paragraphs)."""


def split_paragraphs(texts: Sequence[str]) -> Paragraphs:
    """Split each text on ``"\\n"``; keep the paragraphs that are not empty or whitespace."""
    pieces = [text.split("\n") for text in texts]
    counts = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    flat = list(chain.from_iterable(pieces))
    lengths = np.fromiter(map(len, flat), dtype=np.int64, count=len(flat))
    # Start = sum of the earlier pieces of the same text, one newline after each.
    step = lengths + 1
    ends_of_texts = np.cumsum(counts)
    starts = np.cumsum(step) - step
    starts -= np.repeat(starts[ends_of_texts - counts], counts)
    ends = starts + step
    ends[ends_of_texts - 1] -= 1  # the last piece of a text has no newline
    keep = (lengths > 0) & ~np.fromiter(map(str.isspace, flat), dtype=bool, count=len(flat))
    doc_index = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
    return Paragraphs(
        doc_index=doc_index[keep],
        start=starts[keep],
        end=ends[keep],
        text=list(compress(flat, keep)),
        num_docs=len(texts),
    )


def _capacities(config: DedupConfig) -> dict[str, int]:
    """The enabled kinds of duplicate and the capacity of each one's filter."""
    capacities = {
        "urls": config.expected_documents if config.url else 0,
        "texts": config.expected_documents if config.exact else 0,
        "paragraphs": config.expected_paragraphs if config.paragraphs else 0,
    }
    return {kind: capacity for kind, capacity in capacities.items() if capacity}


class Deduplicator(Tagger):
    """URL, text and paragraph deduplication over one run (see the module's order contract).

    Each enabled kind has its own Bloom filter; a disabled kind has none and its columns
    are left out of :meth:`tag`'s output.
    """

    name: ClassVar[str] = "dedup"

    def __init__(self, config: DedupConfig | None = None) -> None:
        self.config = config or DedupConfig()
        self.filters = {
            kind: BloomFilter(
                expected_items=capacity, false_positive_rate=self.config.false_positive_rate
            )
            for kind, capacity in _capacities(self.config).items()
        }

    def tag(self, docs: pl.DataFrame) -> pl.DataFrame:
        """Dedup attributes of the next batch of the run, in the contract's order."""
        texts: list[str] = docs.get_column("text").to_list()
        columns = [docs.get_column("id")]
        if "urls" in self.filters:
            flags = self._check_keys("urls", _urls(docs))
            columns.append(pl.Series(self._attr("url_duplicate"), flags))
        if "texts" in self.filters:
            flags = self._check_keys("texts", [None if t.isspace() or not t else t for t in texts])
            columns.append(pl.Series(self._attr("text_duplicate"), flags))
        if "paragraphs" in self.filters:
            columns.extend(self._paragraph_columns(texts))
        return pl.DataFrame(columns)

    def _paragraph_columns(self, texts: list[str]) -> list[pl.Series]:
        num_docs = len(texts)
        paragraphs = split_paragraphs(texts)
        duplicate = self.filters["paragraphs"].add_and_check(hash_strings(paragraphs.text))
        doc_index = paragraphs.doc_index[duplicate]
        start, end = paragraphs.start[duplicate], paragraphs.end[duplicate]
        num_paragraphs = np.bincount(paragraphs.doc_index, minlength=num_docs)
        num_duplicate = np.bincount(doc_index, minlength=num_docs)
        duplicate_chars = np.bincount(doc_index, weights=end - start, minlength=num_docs)
        num_chars = np.fromiter(map(len, texts), dtype=np.int64, count=num_docs)
        return [
            spans_column(self._attr("paragraph_spans_duplicate"), doc_index, start, end, num_docs),
            pl.Series(
                self._attr("fraction_of_paragraphs_duplicate"),
                num_duplicate / np.maximum(num_paragraphs, 1),
            ),
            pl.Series(
                self._attr("fraction_of_characters_in_duplicate_paragraphs"),
                duplicate_chars / np.maximum(num_chars, 1),
            ),
        ]

    def _attr(self, name: str) -> str:
        return attribute(self.name, name)

    def _check_keys(self, kind: str, keys: list[str | None]) -> np.ndarray:
        """Flags for ``keys`` in order; ``None`` keys are skipped and never duplicates."""
        present = [key is not None for key in keys]
        flags = np.zeros(len(keys), dtype=bool)
        flags[np.asarray(present, dtype=bool)] = self.filters[kind].add_and_check(
            hash_strings(key for key in keys if key is not None)
        )
        return flags

    def stats(self) -> dict[str, Any]:
        """Each filter's size, fill and estimated false-positive rate."""
        return {kind: bloom.stats() for kind, bloom in self.filters.items()}

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the configuration and the enabled kinds' filters into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for kind, bloom in self.filters.items():
            bloom.save(directory / _FILTER_FILES[kind])
        (directory / _CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Deduplicator:
        """Resume a run's deduplication from what :meth:`save` wrote."""
        directory = Path(directory)
        config_path = directory / _CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(
                f"no saved deduplicator in {directory} (missing {_CONFIG_FILE})"
            )
        deduplicator = cls.__new__(cls)
        deduplicator.config = DedupConfig(**json.loads(config_path.read_text()))
        deduplicator.filters = {
            kind: BloomFilter.load(directory / _FILTER_FILES[kind])
            for kind in _capacities(deduplicator.config)
        }
        return deduplicator
