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

import numpy as np
import polars as pl
import pyarrow as pa

__all__ = ["SPAN", "Tagger", "attribute", "spans_column", "stripped_lines"]

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


def spans_column(
    name: str, doc_index: np.ndarray, start: np.ndarray, end: np.ndarray, num_docs: int
) -> pl.Series:
    """A :data:`SPAN` column of ``num_docs`` rows from flat spans sorted by ``doc_index``."""
    offsets = np.zeros(num_docs + 1, dtype=np.int64)
    np.cumsum(np.bincount(doc_index, minlength=num_docs), out=offsets[1:])
    spans = pa.StructArray.from_arrays(
        [pa.array(start, pa.int64()), pa.array(end, pa.int64())], names=["start", "end"]
    )
    lists = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), spans)
    series = pl.Series(name, lists)
    assert series.dtype == SPAN, series.dtype
    return series


def stripped_lines(texts: pl.Series) -> pl.DataFrame:
    """One row per line of every text (``split("\\n")``), stripped: columns ``doc``, ``line``."""
    return (
        texts.str.split("\n")
        .alias("line")
        .to_frame()
        .with_row_index("doc")
        .explode("line")
        .with_columns(pl.col("line").str.strip_chars())
    )
