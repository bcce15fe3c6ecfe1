"""C4's line and document rules (Raffel et al., 2020), as Dolma's ``c4_v1``/``c4_v2`` taggers.

The tagger reports which lines C4 would drop, as character spans the mixer can delete, and the
document-level flags C4 used to drop whole pages; which of them a pipeline applies is the
preset's business (Dolma v1.5 deleted only the lines without terminal punctuation and kept the
documents, see ``curation/presets/c4.yaml``). Lines are exploded with their document's row index
and tested with Polars string expressions, so nothing loops over lines in Python.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import ClassVar

import polars as pl

from olmo_assets.curation.taggers.base import SPAN, Tagger, attribute

__all__ = ["MIN_WORDS_PER_LINE", "NAUGHTY_WORDS_PATH", "TERMINAL_PUNCTUATION", "C4Tagger"]

#: A line must end with one of these (after stripping whitespace). C4 and Dolma accept
#: ``. ? ! "``; the typographic closing quote ``”`` is the same mark in curly form.
TERMINAL_PUNCTUATION = (".", "?", "!", '"', "”")
#: Lines with fewer whitespace-separated words are dropped (Dolma's value; C4's paper used 5).
MIN_WORDS_PER_LINE = 3
#: A modest list of unambiguous English profanity, sexual terms and slurs, in the spirit of
#: the LDNOOBW list C4 used (which has about 400 entries); one word or phrase per line.
NAUGHTY_WORDS_PATH = Path(__file__).parent / "data" / "naughty_words_en.txt"

# str.strip() and str.split() whitespace: Unicode White_Space plus the ASCII separators.
_SPACE = r"[\s\x1c-\x1f]"
_WORD = r"[^\s\x1c-\x1f]+"
_TERMINAL_PATTERN = "[" + "".join(map(re.escape, TERMINAL_PUNCTUATION)) + "]" + _SPACE + "*$"
_ENOUGH_WORDS_PATTERN = (_SPACE + "+").join([_WORD] * MIN_WORDS_PER_LINE)


@cache
def _naughty_pattern() -> str:
    """A regex matching any listed word or phrase between non-word characters (or the ends)."""
    entries = NAUGHTY_WORDS_PATH.read_text(encoding="utf-8").split("\n")
    alternatives = "|".join(re.escape(entry.strip().lower()) for entry in entries if entry.strip())
    return rf"(?i)(?:^|\W)(?:{alternatives})(?:\W|$)"


class C4Tagger(Tagger):
    """C4's rules per document (all ``c4__*`` columns).

    A *line* is a piece of ``text.split("\\n")``; its span runs from its first character to
    just after its newline (the last line has none), so deleting every span of a document
    deletes the document. The empty piece after a final newline is not a line. Rules ignore
    whitespace around a line and letter case.

    Spans:

    * ``no_ending_punctuation_spans``: lines not ending with one of ``TERMINAL_PUNCTUATION``
      (blank lines included: they end with nothing). Dolma's "C4 NoPunc" rule.
    * ``drop_spans``: lines failing any C4 line rule: no terminal punctuation, fewer than
      ``MIN_WORDS_PER_LINE`` words, or containing ``"javascript"``.

    Counts: ``line_count``; ``lines_dropped`` = lines in ``drop_spans``;
    ``fraction_of_characters_removed`` = characters in ``drop_spans`` / characters of the
    text (0 for an empty text).

    Document flags (C4 dropped the page when set; each is case-insensitive): ``has_lorem_ipsum``
    (contains ``"lorem ipsum"``), ``has_curly_bracket`` (contains ``{``), ``has_javascript``
    (some line contains ``"javascript"``), ``has_naughty_word`` (a word or phrase from
    ``NAUGHTY_WORDS_PATH`` appears between non-word characters, as C4's regex matched it).
    """

    name: ClassVar[str] = "c4"

    def tag(self, docs: pl.DataFrame) -> pl.DataFrame:
        """C4 attributes of ``docs`` (needs ``id`` and ``text``), one row per document."""
        texts = docs.get_column("text")
        lines = _explode_lines(texts)
        line = pl.col("line")
        span = pl.struct("start", "end")
        is_line = pl.col("end") > pl.col("start")
        per_doc = (
            lines.with_columns(
                (is_line & ~line.str.contains(_TERMINAL_PATTERN)).alias("no_punctuation"),
                (is_line & ~line.str.contains(_ENOUGH_WORDS_PATTERN)).alias("too_few_words"),
                line.str.contains("(?i)javascript").alias("javascript"),
            )
            .with_columns(
                pl.any_horizontal("no_punctuation", "too_few_words", "javascript").alias("drop")
            )
            .group_by("doc", maintain_order=True)
            .agg(
                is_line.sum().cast(pl.Int64).alias("line_count"),
                pl.col("drop").sum().cast(pl.Int64).alias("lines_dropped"),
                (pl.col("end") - pl.col("start"))
                .filter(pl.col("drop"))
                .sum()
                .alias("characters_dropped"),
                span.filter(pl.col("drop")).alias("drop_spans"),
                span.filter(pl.col("no_punctuation")).alias("no_ending_punctuation_spans"),
            )
        )
        text_length = texts.str.len_chars()
        columns = {
            "line_count": per_doc.get_column("line_count"),
            "lines_dropped": per_doc.get_column("lines_dropped"),
            "fraction_of_characters_removed": (
                per_doc.get_column("characters_dropped") / text_length.cast(pl.Float64)
            ).fill_nan(0.0),
            "has_lorem_ipsum": texts.str.contains("(?i)lorem ipsum"),
            "has_curly_bracket": texts.str.contains("{", literal=True),
            "has_javascript": texts.str.contains("(?i)javascript"),
            "has_naughty_word": texts.str.contains(_naughty_pattern()),
            "drop_spans": per_doc.get_column("drop_spans").cast(SPAN),
            "no_ending_punctuation_spans": per_doc.get_column("no_ending_punctuation_spans").cast(
                SPAN
            ),
        }
        return pl.DataFrame(
            [docs.get_column("id")]
            + [series.alias(attribute(self.name, name)) for name, series in columns.items()]
        )


def _explode_lines(texts: pl.Series) -> pl.DataFrame:
    """One row per ``split("\\n")`` piece: ``doc``, ``line``, and its span ``start``/``end``.

    Every document has at least one row (``"".split("\\n") == [""]``), so grouping by ``doc``
    keeps every document, in order.
    """
    pieces = (
        pl.DataFrame({"line": texts.str.split("\n"), "text_length": texts.str.len_chars()})
        .with_row_index("doc")
        .explode("line")
    )
    length = pl.col("line").str.len_chars().cast(pl.Int64)
    start = (length + 1).cum_sum().over("doc") - (length + 1)
    return pieces.with_columns(start.alias("start")).with_columns(
        pl.min_horizontal(pl.col("start") + length + 1, pl.col("text_length"))
        .cast(pl.Int64)
        .alias("end")
    )
