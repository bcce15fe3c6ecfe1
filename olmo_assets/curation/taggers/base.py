"""The tagger contract: attributes for a batch of documents, never decisions.

A tagger looks at a batch of documents (a Polars DataFrame with at least ``id``, ``text``
and ``source`` columns, plus ``metadata`` as a JSON string where present) and returns one
row per document, in the same order, with ``id`` first and then its attributes, each named
``{tagger.name}__{attribute}`` (Dolma's convention: ``gopher__word_count``). Scores are
numbers, flags booleans, character spans ``list[struct{start: i64, end: i64}]`` over the
document's text (Python string indices, end exclusive). Decisions (thresholds) live in the
mixer's rules, so changing a threshold never recomputes a tagger. Taggers are vectorized over
the batch (Polars expressions) wherever that matters for speed, deterministic, and free of
Dagster and DVC.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import polars as pl

__all__ = ["SPAN", "Tagger", "attribute"]

#: The dtype of a list of character spans.
SPAN = pl.List(pl.Struct({"start": pl.Int64, "end": pl.Int64}))


def attribute(tagger: str, name: str) -> str:
    """The column name of one attribute (``gopher``, ``word_count`` -> ``gopher__word_count``)."""
    return f"{tagger}__{name}"


class Tagger(ABC):
    """One rule family; subclasses set ``name`` and implement :meth:`tag`."""

    name: ClassVar[str]

    @abstractmethod
    def tag(self, docs: pl.DataFrame) -> pl.DataFrame:
        """Attributes of ``docs``: ``id`` then ``{name}__*`` columns, one row per document."""
