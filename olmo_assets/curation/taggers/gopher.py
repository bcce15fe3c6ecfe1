"""Gopher quality statistics (Rae et al., 2021), after Dolma's ``gopher_v1`` tagger.

One :class:`GopherTagger` returns every statistic the Gopher quality and repetition rules need,
for both presets (Dolma v1.5 and the Gopher paper, see ``curation/presets``); the thresholds live
in the presets, never here. The work is vectorized over the whole batch: words and lines are
exploded with their document's row index and aggregated with Polars, and n-gram repetition is
found with packed ``numpy`` sorts rather than per-word Python loops.

Definitions (``C`` is the sum of a document's word lengths, in characters):

* **word**: a maximal run of non-whitespace characters, exactly ``str.split()`` with no
  argument (Unicode whitespace plus the ASCII separators ``\\x1c``-``\\x1f``).
* **line**: a piece of ``text.split("\\n")`` stripped of surrounding whitespace; blank lines are
  not lines (they neither count as duplicates nor dilute the fractions).
* **paragraph**: a maximal run of consecutive lines with no blank line between them (so
  paragraphs are separated by two or more newlines), its lines joined by ``"\\n"``. Two
  paragraphs are the same when their lines are (compared by 64-bit hashes: two different
  paragraphs of a document are taken as equal with probability about 2**-64).
* **symbol**: an occurrence of ``#``, ``...`` (non-overlapping) or ``…`` anywhere in the text.
* **bullet line**: a line starting with one of ``BULLETS``; **ellipsis line**: a line ending
  with ``...`` or ``…``.
* **alphabetic word**: a word containing a Unicode letter (general category ``L``, what
  ``str.isalpha`` tests).

A document with no words (empty or whitespace-only text) gets 0 for every count and fraction.

Where this departs from Dolma's ``gopher.py`` (towards the Gopher paper and datatrove): Dolma
keeps blank lines, so blank separator lines count as duplicate lines there; its bullets are only
``*`` and ``-`` in the first column, its ellipsis only ``…``, and its symbol ratio counts words
containing ``#`` or ``…``; it divides the characters of duplicate lines by ``C`` (spaces in the
numerator only, so it can exceed 1), here by the characters of all lines. Dolma's own duplicate
n-gram ratio is kept, beside the paper's (see :class:`GopherTagger`).
"""

from __future__ import annotations

import re
from typing import ClassVar

import numpy as np
import polars as pl

from olmo_assets.curation.taggers.base import Tagger, attribute, stripped_lines

__all__ = [
    "BULLETS",
    "DUPLICATE_NGRAM_SIZES",
    "MOST_COMMON_NGRAM_SIZES",
    "REQUIRED_WORDS",
    "GopherTagger",
]

#: Gopher's "stop words"; a document needs a few of them to look like English prose.
REQUIRED_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
#: Line-initial bullet markers: Dolma's ``*`` and ``-`` plus the Unicode bullets.
BULLETS = ("*", "-", "•", "‣", "◦", "⁃", "▪")
#: n for "characters in the most common n-gram" (Gopher/Dolma: 2, 3, 4).
MOST_COMMON_NGRAM_SIZES = (2, 3, 4)
#: n for "characters in duplicate n-grams" (Gopher/Dolma: 5 to 10).
DUPLICATE_NGRAM_SIZES = (5, 6, 7, 8, 9, 10)

# Python's str.split() whitespace is Unicode White_Space plus the four ASCII separators.
_WORD_PATTERN = r"[^\s\x1c-\x1f]+"
_SYMBOL_PATTERN = r"#|\.\.\.|…"
_BULLET_PATTERN = "^[" + "".join(map(re.escape, BULLETS)) + "]"
_ELLIPSIS_PATTERN = r"(\.\.\.|…)$"
# Odd 64-bit constant that spreads the document index over all bits of a word's hash.
_DOC_MIX = np.uint64(0x9E3779B97F4A7C15)


class GopherTagger(Tagger):
    """Gopher's per-document quality and repetition statistics (all ``gopher__*`` columns).

    Word statistics: ``word_count``; ``mean_word_length`` and ``median_word_length`` (in
    characters; the median of an even count is the mean of the two middle lengths, as
    ``statistics.median``); ``symbol_to_word_ratio`` = symbols / words;
    ``fraction_of_words_with_alpha_character``; ``required_word_count`` = the number of
    *occurrences* (not distinct words) of words exactly equal, case-sensitively, to one of
    ``REQUIRED_WORDS`` (Dolma's count: ``"The"`` and ``"the,"`` do not count).

    Line statistics (over lines as defined in the module docstring, 0 with no lines):
    ``fraction_of_lines_starting_with_bullet``, ``fraction_of_lines_ending_with_ellipsis``,
    ``fraction_of_duplicate_lines`` = lines whose text occurs more than once in the document /
    lines (every occurrence counts, the first included, as in Dolma; datatrove counts only the
    later copies), and ``fraction_of_characters_in_duplicate_lines`` = characters of those
    lines / characters of all lines. ``fraction_of_duplicate_paragraphs`` and
    ``fraction_of_characters_in_duplicate_paragraphs`` are the same over paragraphs.

    n-gram statistics (an n-gram is n consecutive words; its characters are the sum of its
    words' lengths, spaces excluded; all fractions 0 when the document has fewer than n words):

    * ``fraction_of_characters_in_most_common_{n}grams`` (n = 2, 3, 4), Dolma's definition:
      count x characters of the most frequent n-gram / ``C``, ties going to the n-gram that
      occurs first (as ``Counter.most_common``). Overlapping occurrences each count, so a
      degenerate text such as ``"a a a a"`` can exceed 1.
    * ``fraction_of_characters_in_duplicate_{n}grams`` (n = 5..10), the Gopher paper's
      definition: characters of the words covered by at least one occurrence of an n-gram
      that occurs more than once / ``C``; a word inside several overlapping duplicate n-grams
      counts once, so the value is in [0, 1].
    * ``fraction_of_ngram_characters_in_duplicate_{n}grams`` (n = 5..10), Dolma's definition:
      the sum over n-gram *occurrences* of the characters of those whose n-gram occurs more
      than once / the sum over all n-gram occurrences. An isolated repeated n-gram weighs
      about n times less here than in the paper's definition; the Dolma preset uses this one.
    """

    name: ClassVar[str] = "gopher"

    def tag(self, docs: pl.DataFrame) -> pl.DataFrame:
        """Gopher statistics of ``docs`` (needs ``id`` and ``text``), one row per document."""
        texts = docs.get_column("text")
        num_docs = docs.height
        words = _explode_words(texts)
        columns: dict[str, pl.Series | np.ndarray] = {}
        columns.update(_word_statistics(texts, words))
        columns.update(
            _ngram_statistics(
                words.get_column("doc").to_numpy(),
                words.get_column("key").to_numpy(),
                words.get_column("length").to_numpy(),
                num_docs,
            )
        )
        columns.update(_line_and_paragraph_statistics(texts))
        return pl.DataFrame(
            [docs.get_column("id")]
            + [pl.Series(attribute(self.name, name), values) for name, values in columns.items()]
        )


def _explode_words(texts: pl.Series) -> pl.DataFrame:
    """One row per word: ``doc`` (row index), ``word``, ``length``, and a per-document ``key``.

    ``key`` is the word's 64-bit hash mixed with its document index, so equal words in
    different documents get different keys and n-grams never match across documents. Two
    different words share a key with probability about 2**-64 per pair, the only inexactness.
    """
    words = (
        texts.str.extract_all(_WORD_PATTERN)
        .alias("word")
        .to_frame()
        .with_row_index("doc")
        .explode("word")
        .drop_nulls("word")
        .with_columns(
            pl.col("doc").cast(pl.Int64),
            pl.col("word").str.len_chars().cast(pl.Int64).alias("length"),
        )
    )
    word_hash = words.get_column("word").hash(seed=0).to_numpy()
    doc = words.get_column("doc").to_numpy().astype(np.uint64)
    return words.with_columns(pl.Series("key", word_hash ^ ((doc + np.uint64(1)) * _DOC_MIX)))


def _word_statistics(texts: pl.Series, words: pl.DataFrame) -> dict[str, pl.Series]:
    per_doc = (
        words.group_by("doc")
        .agg(
            pl.len().alias("word_count"),
            pl.col("length").mean().alias("mean_word_length"),
            pl.col("length").median().alias("median_word_length"),
            pl.col("word").str.contains(r"\p{L}").sum().alias("alpha_words"),
            pl.col("word").is_in(REQUIRED_WORDS).sum().alias("required_word_count"),
        )
        .with_columns(pl.col("doc").cast(pl.UInt32))
    )
    frame = (
        texts.str.count_matches(_SYMBOL_PATTERN)
        .alias("symbols")
        .to_frame()
        .with_row_index("doc")
        .join(per_doc, on="doc", how="left", maintain_order="left")
        .fill_null(0)
    )
    word_count = pl.col("word_count")
    ratio = pl.when(word_count > 0)
    return {
        name: series
        for name, series in frame.select(
            word_count.cast(pl.Int64),
            pl.col("mean_word_length").cast(pl.Float64),
            pl.col("median_word_length").cast(pl.Float64),
            ratio.then(pl.col("symbols") / word_count).otherwise(0.0).alias("symbol_to_word_ratio"),
            ratio.then(pl.col("alpha_words") / word_count)
            .otherwise(0.0)
            .alias("fraction_of_words_with_alpha_character"),
            pl.col("required_word_count").cast(pl.Int64),
        )
        .to_dict()
        .items()
    }


def _ngram_statistics(
    doc: np.ndarray, keys: np.ndarray, lengths: np.ndarray, num_docs: int
) -> dict[str, np.ndarray]:
    """Most-common and duplicate n-gram fractions from the batch's words (see the class doc).

    ``doc``, ``keys`` and ``lengths`` describe the words in order, documents contiguous.
    n-grams are numbered level by level: an n-gram is the pair (its (n-1)-gram prefix's number,
    its last word's number), so numbers are exact. Only an n-gram whose prefix is repeated can
    be repeated, so each level looks only at the previous level's repeated positions.
    """
    num_words = len(doc)
    assert num_words < 1 << 32, "n-gram numbers (< num_words**2) must fit in 64 bits"
    words_per_doc = np.bincount(doc, minlength=num_docs)
    first_word = np.cumsum(words_per_doc) - words_per_doc
    # Words from each position to its document's end, the position included.
    remaining = words_per_doc[doc] - (np.arange(num_words) - first_word[doc])
    chars = _NgramCharacters(lengths, doc, words_per_doc, first_word)

    out: dict[str, np.ndarray] = {}
    word_ids, word_counts = _dense_rank(keys)
    num_word_ids = np.uint64(word_ids.max() + 1) if num_words else np.uint64(1)
    positions = np.flatnonzero(word_counts > 1)  # starts of repeated (n-1)-grams, ascending
    ids = word_ids[positions]
    for n in range(2, max(DUPLICATE_NGRAM_SIZES) + 1):
        long_enough = remaining[positions] >= n  # an n-gram starts there
        positions, ids = positions[long_enough], ids[long_enough]
        ngram_ids, counts = _dense_rank(
            ids.astype(np.uint64) * num_word_ids + word_ids[positions + n - 1].astype(np.uint64)
        )
        repeated = counts > 1
        positions, ids, counts = positions[repeated], ngram_ids[repeated], counts[repeated]
        if n in MOST_COMMON_NGRAM_SIZES:
            out[f"fraction_of_characters_in_most_common_{n}grams"] = _most_common_fraction(
                n, doc, positions, counts, chars
            )
        if n in DUPLICATE_NGRAM_SIZES:
            # Occurrences of repeated n-grams are [p, p + n) for p in positions; their union
            # gives each position the words up to the next start, at most n of them.
            ends = np.minimum(positions + n, np.r_[positions[1:], num_words])
            covered = chars.between(positions, ends)
            out[f"fraction_of_characters_in_duplicate_{n}grams"] = _safe_divide(
                np.bincount(doc[positions], weights=covered, minlength=num_docs), chars.per_doc
            )
            repeated_chars = chars.between(positions, positions + n)
            out[f"fraction_of_ngram_characters_in_duplicate_{n}grams"] = _safe_divide(
                np.bincount(doc[positions], weights=repeated_chars, minlength=num_docs),
                chars.in_all_ngrams(n),
            )
    return out


class _NgramCharacters:
    """Character sums over word ranges of the batch, from prefix sums of the word lengths."""

    def __init__(
        self,
        lengths: np.ndarray,
        doc: np.ndarray,
        words_per_doc: np.ndarray,
        first_word: np.ndarray,
    ) -> None:
        self.cumulative = np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)))
        self.cumulative_of_cumulative = np.concatenate(([0], np.cumsum(self.cumulative)))
        self.per_doc = np.bincount(doc, weights=lengths, minlength=len(words_per_doc))
        self.words_per_doc = words_per_doc
        self.first_word = first_word

    def between(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Characters of words ``starts[i]`` to ``ends[i]`` (exclusive)."""
        return self.cumulative[ends] - self.cumulative[starts]

    def in_all_ngrams(self, n: int) -> np.ndarray:
        """Per document, the sum over its n-gram occurrences of their characters.

        With ``c`` the prefix sums, that is ``sum(c[i + n] - c[i])`` over the n-gram starts
        ``i`` of the document, computed from prefix sums of ``c``.
        """
        has_ngrams = self.words_per_doc >= n
        first = self.first_word[has_ngrams]
        last_start = first + self.words_per_doc[has_ngrams] - n
        total = self.cumulative_of_cumulative
        value = np.zeros(len(self.words_per_doc))
        value[has_ngrams] = (total[last_start + n + 1] - total[first + n]) - (
            total[last_start + 1] - total[first]
        )
        return value


def _most_common_fraction(
    n: int, doc: np.ndarray, positions: np.ndarray, counts: np.ndarray, chars: _NgramCharacters
) -> np.ndarray:
    """Per document: count x characters of its most common n-gram / its characters.

    ``positions`` (ascending) and ``counts`` are the occurrences of repeated n-grams. The most
    common n-gram is the first, in text order, among those with the highest count; with no
    repeated n-gram every count is 1 and it is the document's first n-gram.
    """
    has_ngrams = chars.words_per_doc >= n
    first = chars.first_word[has_ngrams]
    most_common_chars = np.zeros(len(chars.per_doc))
    most_common_chars[has_ngrams] = chars.between(first, first + n)
    if len(positions):
        position_doc = doc[positions]
        segment_starts = np.flatnonzero(np.r_[True, position_doc[1:] != position_doc[:-1]])
        segment_docs = position_doc[segment_starts]
        max_counts = np.maximum.reduceat(counts, segment_starts)
        segment_sizes = np.diff(np.r_[segment_starts, len(positions)])
        at_max = np.flatnonzero(counts == np.repeat(max_counts, segment_sizes))
        at_max_doc = position_doc[at_max]
        first_at_max = positions[at_max[np.r_[True, at_max_doc[1:] != at_max_doc[:-1]]]]
        most_common_chars[segment_docs] = max_counts * chars.between(first_at_max, first_at_max + n)
    return _safe_divide(most_common_chars, chars.per_doc)


def _dense_rank(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number the distinct ``keys`` 0..k-1 and count each key's occurrences, per element.

    Sorts ``key << b | position`` in one ``uint64`` (a plain sort is several times faster than
    ``argsort``; Polars sorts it). Keys too wide for that are truncated for the sort and compared in full
    afterwards; if two different keys shared a truncated value it falls back to ``np.unique``,
    so the result is always exact.
    """
    size = len(keys)
    if size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    keys = keys.astype(np.uint64, copy=False)
    position_bits = max(size - 1, 1).bit_length()
    shift = np.uint64(position_bits)
    sortable = keys if int(keys.max()) < 1 << (64 - position_bits) else keys >> shift
    # Polars' sort of unsigned integers is a radix sort, several times faster than numpy's.
    packed = pl.Series((sortable << shift) | np.arange(size, dtype=np.uint64)).sort().to_numpy()
    order = (packed & np.uint64((1 << position_bits) - 1)).astype(np.int64)
    sorted_keys = keys[order]
    changed = sorted_keys[1:] != sorted_keys[:-1]
    truncated = packed >> shift
    if np.any(changed & (truncated[1:] == truncated[:-1])):
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        return inverse.astype(np.int64), counts[inverse].astype(np.int64)
    sorted_ids = np.empty(size, dtype=np.int64)
    sorted_ids[0] = 0
    np.cumsum(changed, out=sorted_ids[1:])
    group_sizes = np.bincount(sorted_ids)
    ids = np.empty(size, dtype=np.int64)
    ids[order] = sorted_ids
    counts = group_sizes[ids]
    return ids, counts


def _line_and_paragraph_statistics(texts: pl.Series) -> dict[str, pl.Series]:
    lines = (
        stripped_lines(texts)
        .with_columns(
            (pl.col("line") == "").cum_sum().alias("paragraph"),  # unique per (doc, paragraph)
            pl.col("line").str.len_chars().alias("length"),
        )
        .filter(pl.col("line") != "")
    )
    per_doc_lines = (
        lines.with_columns(
            (pl.len().over("doc", "line") > 1).alias("duplicate"),
            pl.col("line").str.contains(_BULLET_PATTERN).alias("bullet"),
            pl.col("line").str.contains(_ELLIPSIS_PATTERN).alias("ellipsis"),
        )
        .group_by("doc")
        .agg(
            pl.len().alias("lines"),
            pl.col("bullet").sum().alias("bullet_lines"),
            pl.col("ellipsis").sum().alias("ellipsis_lines"),
            pl.col("duplicate").sum().alias("duplicate_lines"),
            pl.col("length").sum().alias("line_chars"),
            pl.col("length").filter(pl.col("duplicate")).sum().alias("duplicate_line_chars"),
        )
    )
    # A paragraph is compared by a hash of its lines' hashes, not by its joined text (several
    # times faster); two different paragraphs of a document collide with probability 2**-64.
    paragraphs = (
        lines.with_columns(pl.col("line").hash(seed=0).alias("line_hash"))
        .group_by("doc", "paragraph")
        .agg(
            pl.col("line_hash").alias("text"),
            (pl.col("length").sum() + pl.len() - 1).alias("length"),
        )
        .with_columns(pl.col("text").hash(seed=0))
    )
    per_doc_paragraphs = (
        paragraphs.with_columns((pl.len().over("doc", "text") > 1).alias("duplicate"))
        .group_by("doc")
        .agg(
            pl.len().alias("paragraphs"),
            pl.col("duplicate").sum().alias("duplicate_paragraphs"),
            pl.col("length").sum().alias("paragraph_chars"),
            pl.col("length").filter(pl.col("duplicate")).sum().alias("duplicate_paragraph_chars"),
        )
    )
    frame = (
        pl.DataFrame({"doc": pl.int_range(len(texts), eager=True, dtype=pl.UInt32)})
        .join(per_doc_lines, on="doc", how="left", maintain_order="left")
        .join(per_doc_paragraphs, on="doc", how="left", maintain_order="left")
        .fill_null(0)
    )

    def fraction(numerator: str, denominator: str, name: str) -> pl.Expr:
        total = pl.col(denominator)
        return pl.when(total > 0).then(pl.col(numerator) / total).otherwise(0.0).alias(name)

    return {
        name: series
        for name, series in frame.select(
            fraction("bullet_lines", "lines", "fraction_of_lines_starting_with_bullet"),
            fraction("ellipsis_lines", "lines", "fraction_of_lines_ending_with_ellipsis"),
            fraction("duplicate_lines", "lines", "fraction_of_duplicate_lines"),
            fraction(
                "duplicate_line_chars", "line_chars", "fraction_of_characters_in_duplicate_lines"
            ),
            fraction("duplicate_paragraphs", "paragraphs", "fraction_of_duplicate_paragraphs"),
            fraction(
                "duplicate_paragraph_chars",
                "paragraph_chars",
                "fraction_of_characters_in_duplicate_paragraphs",
            ),
        )
        .to_dict()
        .items()
    }


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 0 where the denominator is 0."""
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator > 0)
