"""Repetition statistics beyond Gopher's: repeated lines, character runs, compressibility.

Cheap signals of boilerplate and degenerate text (a line pasted 500 times, ``"!!!!!!..."``,
text that zlib squeezes to almost nothing) for rules to threshold. Lines are exploded and
counted with Polars; character runs are found with ``numpy`` over the whole batch's code points;
only the zlib call loops over documents (zlib itself is C).
"""

from __future__ import annotations

import zlib
from typing import ClassVar

import numpy as np
import polars as pl

from olmo_assets.curation.taggers.base import Tagger, attribute, stripped_lines

__all__ = ["ZLIB_LEVEL", "RepetitionTagger"]

#: zlib's default level: the usual "compression ratio" and about 50 MB/s on one core.
ZLIB_LEVEL = 6


class RepetitionTagger(Tagger):
    """Repetition statistics per document (all ``repetition__*`` columns).

    Lines are the pieces of ``text.split("\\n")`` stripped of surrounding whitespace; blank
    ones are ignored.

    * ``max_line_repeat_count``: occurrences of the document's most frequent line (0 with no
      lines, 1 when no line repeats).
    * ``fraction_of_repeated_lines``: lines that repeat an earlier line / lines, i.e. the share
      of lines line-level deduplication would remove (0 with no lines).
    * ``max_char_run``: the longest run of one repeated character (code point), whitespace
      included (0 for an empty text).
    * ``compression_ratio``: ``len(zlib.compress(utf8, ZLIB_LEVEL)) / len(utf8)``; low means
      repetitive. zlib's header makes very short texts exceed 1; an empty text gets 1.0.
      Repeats further apart than zlib's 32 KiB window are not seen.
    """

    name: ClassVar[str] = "repetition"

    def tag(self, docs: pl.DataFrame) -> pl.DataFrame:
        """Repetition statistics of ``docs`` (needs ``id`` and ``text``), one row per document."""
        texts = docs.get_column("text")
        lines = _line_statistics(texts)
        text_list = texts.to_list()
        columns = {
            "max_line_repeat_count": lines.get_column("max_line_repeat_count"),
            "fraction_of_repeated_lines": lines.get_column("fraction_of_repeated_lines"),
            "max_char_run": pl.Series(_max_char_runs(text_list)),
            "compression_ratio": pl.Series(
                [_compression_ratio(text) for text in text_list], dtype=pl.Float64
            ),
        }
        return pl.DataFrame(
            [docs.get_column("id")]
            + [series.alias(attribute(self.name, name)) for name, series in columns.items()]
        )


def _line_statistics(texts: pl.Series) -> pl.DataFrame:
    per_line = (
        stripped_lines(texts).filter(pl.col("line") != "").group_by("doc", "line").len("count")
    )
    per_doc = per_line.group_by("doc").agg(
        pl.col("count").max().cast(pl.Int64).alias("max_line_repeat_count"),
        pl.col("count").sum().alias("lines"),
        pl.len().alias("distinct_lines"),
    )
    return (
        pl.DataFrame({"doc": pl.int_range(len(texts), eager=True, dtype=pl.UInt32)})
        .join(per_doc, on="doc", how="left", maintain_order="left")
        .fill_null(0)
        .select(
            "max_line_repeat_count",
            pl.when(pl.col("lines") > 0)
            .then((pl.col("lines") - pl.col("distinct_lines")) / pl.col("lines"))
            .otherwise(0.0)
            .alias("fraction_of_repeated_lines"),
        )
    )


def _max_char_runs(texts: list[str]) -> np.ndarray:
    """The longest run of one code point in each text, from one array over the whole batch."""
    lengths = np.fromiter((len(text) for text in texts), dtype=np.int64, count=len(texts))
    result = np.minimum(lengths, 1)  # any non-empty text has a run of 1
    if lengths.sum() < 2:
        return result
    code_points = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
    # same[i]: character i + 1 repeats character i, within one document
    same = code_points[1:] == code_points[:-1]
    doc_ends = np.cumsum(lengths)
    same[doc_ends[(lengths > 0) & (doc_ends < len(code_points))] - 1] = False
    repeats = np.flatnonzero(same)
    if len(repeats) == 0:
        return result
    # Consecutive repeat positions form one run: its length is their number plus one.
    streak_starts = np.flatnonzero(np.r_[True, repeats[1:] != repeats[:-1] + 1])
    streak_lengths = np.diff(np.r_[streak_starts, len(repeats)]) + 1
    streak_docs = np.searchsorted(doc_ends, repeats[streak_starts], side="right")
    np.maximum.at(result, streak_docs, streak_lengths)
    return result


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    if not data:
        return 1.0
    return len(zlib.compress(data, ZLIB_LEVEL)) / len(data)
