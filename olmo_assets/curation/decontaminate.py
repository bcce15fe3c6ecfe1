"""Decontamination with Paloma's rule: flag training documents that contain evaluation text.

Paloma (and Dolma's decontamination run) split evaluation documents into paragraphs on
newlines, keep the paragraphs of at least 13 tokens, and put them in a Bloom filter; a
training document any of whose paragraphs is in the filter is removed. Code is exempt.

:class:`ContaminationIndex` is that filter plus the rule. Its tagger (name ``decontam``)
reports, per training document, how many of its paragraphs are in the index, their spans
(the convention of :mod:`~olmo_assets.curation.dedup`: the line through its newline), and
whether the document is contaminated; removing it is the mixer's decision.

**Definitions.** Paragraphs are the pieces of ``text.split("\\n")``. Both sides are
normalized by stripping leading and trailing whitespace (``str.strip``) and nothing else:
no case folding, no inner-whitespace collapsing; the match is exact on what remains (Dolma's
deduper matches the raw line; stripping only forgives trailing spaces and ``\\r``). Tokens
are whitespace-separated words unless a tokenizer (a callable returning a sequence, such as
``olmo_nn.tokenizer.Tokenizer.encode``) is given; the threshold applies to evaluation
paragraphs only. A training paragraph shorter (in characters) than the shortest indexed one
cannot match and is not looked up, which keeps short lines out of the false positives.
Keys are xxh3-128 digests of the UTF-8 bytes, as in :mod:`~olmo_assets.curation.bloom`.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sized
from itertools import compress
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl

from olmo_assets.curation.bloom import BloomFilter, hash_strings
from olmo_assets.curation.dedup import split_paragraphs
from olmo_assets.curation.taggers.base import Tagger, attribute, spans_column

__all__ = ["DEFAULT_EXEMPT_SOURCES", "ContaminationIndex", "normalize_paragraph"]

#: Sources never flagged: Paloma does not decontaminate code.
DEFAULT_EXEMPT_SOURCES = frozenset({"code"})
_INDEX_FILE = "decontam.json"
_FILTER_FILE = "paragraphs.bloom"


def normalize_paragraph(paragraph: str) -> str:
    """The text a paragraph is matched on: stripped of surrounding whitespace."""
    return paragraph.strip()


def _read_jsonl(path: Path, text_field: str) -> Iterator[str]:
    if not path.is_file():
        raise FileNotFoundError(f"no evaluation file at {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            if text_field not in record:
                raise ValueError(
                    f"{path}:{line_number} has no field {text_field!r} (fields: "
                    f"{sorted(record)}); pass the right text_field"
                )
            yield record[text_field]


class ContaminationIndex(Tagger):
    """Evaluation paragraphs in a Bloom filter, and the tagger that looks training text up."""

    name: ClassVar[str] = "decontam"

    def __init__(
        self,
        bloom: BloomFilter,
        *,
        min_chars: int,
        num_paragraphs: int,
        min_tokens: int,
        exempt_sources: Iterable[str] = DEFAULT_EXEMPT_SOURCES,
    ) -> None:
        self.bloom = bloom
        #: Characters in the shortest indexed paragraph (after normalization).
        self.min_chars = min_chars
        #: Distinct evaluation paragraphs indexed.
        self.num_paragraphs = num_paragraphs
        #: The token threshold the index was built with.
        self.min_tokens = min_tokens
        #: Sources whose documents are never flagged.
        self.exempt_sources = frozenset(exempt_sources)

    @classmethod
    def from_texts(
        cls,
        eval_texts: Iterable[str],
        tokenizer: Callable[[str], Sized] | None = None,
        min_tokens: int = 13,
        *,
        false_positive_rate: float = 1e-7,
        exempt_sources: Iterable[str] = DEFAULT_EXEMPT_SOURCES,
    ) -> ContaminationIndex:
        """Index the paragraphs of ``eval_texts`` with at least ``min_tokens`` tokens.

        ``false_positive_rate`` is per training paragraph looked up; one false positive
        removes a whole document, hence the small default.
        """
        if min_tokens <= 0:
            raise ValueError(f"min_tokens must be positive, got {min_tokens}")
        count_tokens: Callable[[str], int] = (
            (lambda text: len(text.split()))
            if tokenizer is None
            else (lambda text: len(tokenizer(text)))
        )
        paragraphs = {
            normalized
            for text in eval_texts
            for piece in text.split("\n")
            if (normalized := normalize_paragraph(piece)) and count_tokens(normalized) >= min_tokens
        }
        # Sorted, so the same evaluation data always builds the same filter bit for bit.
        ordered = sorted(paragraphs)
        bloom = BloomFilter(
            expected_items=max(1, len(ordered)), false_positive_rate=false_positive_rate
        )
        bloom.add(hash_strings(ordered))
        return cls(
            bloom,
            min_chars=min(map(len, ordered), default=0),
            num_paragraphs=len(ordered),
            min_tokens=min_tokens,
            exempt_sources=exempt_sources,
        )

    @classmethod
    def from_jsonl(
        cls,
        paths: Iterable[str | os.PathLike[str]],
        text_field: str = "text",
        tokenizer: Callable[[str], Sized] | None = None,
        min_tokens: int = 13,
        **kwargs: Any,
    ) -> ContaminationIndex:
        """Index the ``text_field`` of every record of jsonl files (``.gz`` too), in order."""
        texts = (text for path in paths for text in _read_jsonl(Path(path), text_field))
        return cls.from_texts(texts, tokenizer, min_tokens, **kwargs)

    def tag(self, docs: pl.DataFrame) -> pl.DataFrame:
        """Contaminated paragraphs of each document (none for exempt sources)."""
        exempt = docs.get_column("source").is_in(list(self.exempt_sources)).to_list()
        texts = [
            "" if skip else text
            for skip, text in zip(exempt, docs.get_column("text").to_list(), strict=True)
        ]
        paragraphs = split_paragraphs(texts)
        normalized = [normalize_paragraph(p) for p in paragraphs.text]
        lengths = np.fromiter(map(len, normalized), dtype=np.int64, count=len(normalized))
        if self.num_paragraphs == 0:
            looked_up = np.zeros(lengths.size, dtype=bool)
        else:
            looked_up = lengths >= self.min_chars
        contaminated = np.zeros(lengths.size, dtype=bool)
        contaminated[looked_up] = self.bloom.contains(hash_strings(compress(normalized, looked_up)))
        doc_index = paragraphs.doc_index[contaminated]
        num_contaminated = np.bincount(doc_index, minlength=docs.height)
        return pl.DataFrame(
            [
                docs.get_column("id"),
                pl.Series(attribute(self.name, "contaminated_paragraphs"), num_contaminated),
                spans_column(
                    attribute(self.name, "spans"),
                    doc_index,
                    paragraphs.start[contaminated],
                    paragraphs.end[contaminated],
                    docs.height,
                ),
                pl.Series(attribute(self.name, "is_contaminated"), num_contaminated > 0),
            ]
        )

    def stats(self) -> dict[str, Any]:
        """Indexed paragraphs and the filter's size and error rates."""
        return {
            "num_paragraphs": self.num_paragraphs,
            "min_tokens": self.min_tokens,
            "min_chars": self.min_chars,
            "exempt_sources": sorted(self.exempt_sources),
            "bloom": self.bloom.stats(),
        }

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the filter and the rule's parameters into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.bloom.save(directory / _FILTER_FILE)
        header = {
            "min_chars": self.min_chars,
            "num_paragraphs": self.num_paragraphs,
            "min_tokens": self.min_tokens,
            "exempt_sources": sorted(self.exempt_sources),
        }
        (directory / _INDEX_FILE).write_text(json.dumps(header, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ContaminationIndex:
        """Read an index written by :meth:`save`."""
        directory = Path(directory)
        header_path = directory / _INDEX_FILE
        if not header_path.is_file():
            raise FileNotFoundError(f"no contamination index in {directory} (no {_INDEX_FILE})")
        header = json.loads(header_path.read_text())
        return cls(BloomFilter.load(directory / _FILTER_FILE), **header)
