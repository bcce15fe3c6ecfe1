"""GopherTagger: every statistic on small documents whose values were computed by hand."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import polars as pl
import pytest

from olmo_assets.curation.taggers.gopher import GopherTagger, _dense_rank


def tag(*texts: str) -> list[dict[str, float]]:
    """Tag ``texts`` as one batch; each row without the ``gopher__`` prefix."""
    docs = pl.DataFrame(
        {"id": [f"d{i}" for i in range(len(texts))], "text": list(texts), "source": "test"}
    )
    out = GopherTagger().tag(docs)
    assert out.columns[0] == "id"
    assert out.get_column("id").to_list() == docs.get_column("id").to_list()
    assert all(name.startswith("gopher__") for name in out.columns[1:])
    return [
        {key.removeprefix("gopher__"): value for key, value in row.items()}
        for row in out.to_dicts()
    ]


def test_word_statistics_of_a_short_sentence() -> None:
    (row,) = tag("the cat sat on the mat")
    # words: the(3) cat(3) sat(3) on(2) the(3) mat(3): 6 words, 17 characters
    assert row["word_count"] == 6
    assert row["mean_word_length"] == pytest.approx(17 / 6)
    assert row["median_word_length"] == 3.0  # sorted 2,3,3,3,3,3: (3 + 3) / 2
    assert row["symbol_to_word_ratio"] == 0.0
    assert row["fraction_of_words_with_alpha_character"] == 1.0
    assert row["required_word_count"] == 2  # "the" twice; "on" is not a required word
    # No n-gram repeats, so the most common one is the first: "the cat" (6 chars) once, etc.
    assert row["fraction_of_characters_in_most_common_2grams"] == pytest.approx(6 / 17)
    assert row["fraction_of_characters_in_most_common_3grams"] == pytest.approx(9 / 17)
    assert row["fraction_of_characters_in_most_common_4grams"] == pytest.approx(11 / 17)
    for n in range(5, 11):  # two unique 5-grams, one 6-gram, no longer ones
        assert row[f"fraction_of_characters_in_duplicate_{n}grams"] == 0.0
        assert row[f"fraction_of_ngram_characters_in_duplicate_{n}grams"] == 0.0
    # one line, no bullet, no ellipsis, no duplicate
    assert row["fraction_of_lines_starting_with_bullet"] == 0.0
    assert row["fraction_of_lines_ending_with_ellipsis"] == 0.0
    assert row["fraction_of_duplicate_lines"] == 0.0
    assert row["fraction_of_characters_in_duplicate_lines"] == 0.0


def test_required_words_count_occurrences_case_sensitively() -> None:
    (row,) = tag("to be or not to be")
    assert row["required_word_count"] == 4  # to, be, to, be: occurrences, not 2 distinct
    (row,) = tag("The end, to the")
    assert row["required_word_count"] == 2  # "to" and "the"; "The" does not match


def test_median_of_an_odd_and_an_even_number_of_words() -> None:
    odd, even = tag("a bb cccccc", "a bb ccc dddddddd")
    assert odd["median_word_length"] == 2.0  # 1, 2, 6
    assert even["median_word_length"] == 2.5  # 1, 2, 3, 8: (2 + 3) / 2
    assert even["mean_word_length"] == pytest.approx(14 / 4)


def test_most_common_ngram_counts_its_occurrences() -> None:
    (row,) = tag("to be or not to be")
    # words to(2) be(2) or(2) not(3) to(2) be(2): 13 characters; "to be" occurs twice
    assert row["fraction_of_characters_in_most_common_2grams"] == pytest.approx(2 * 4 / 13)
    # every 3-gram and 4-gram is unique: the first, "to be or" (6), "to be or not" (9)
    assert row["fraction_of_characters_in_most_common_3grams"] == pytest.approx(6 / 13)
    assert row["fraction_of_characters_in_most_common_4grams"] == pytest.approx(9 / 13)


def test_most_common_ngram_ties_go_to_the_first_occurring() -> None:
    (row,) = tag("aa b c aa b c")
    # "aa b" (3 chars) and "b c" (2 chars) both occur twice; "aa b" comes first: 2 * 3 / 8
    assert row["fraction_of_characters_in_most_common_2grams"] == pytest.approx(6 / 8)


def test_most_common_ngram_overlaps_can_exceed_one() -> None:
    (row,) = tag("a a a a")
    assert row["fraction_of_characters_in_most_common_2grams"] == 1.5  # 3 x "a a" (2) / 4
    assert row["fraction_of_characters_in_most_common_3grams"] == 1.5  # 2 x 3 / 4
    assert row["fraction_of_characters_in_most_common_4grams"] == 1.0  # 1 x 4 / 4


def test_duplicate_ngram_fractions_paper_and_dolma_definitions() -> None:
    (row,) = tag("aa b c d e f aa b c d e")
    # 11 words, 13 characters; the 5-gram "aa b c d e" (6 chars) starts at words 0 and 6.
    # Paper: words 0-4 and 6-10 are covered: 12 of 13 characters.
    assert row["fraction_of_characters_in_duplicate_5grams"] == pytest.approx(12 / 13)
    # Dolma: 7 5-gram occurrences of 6, 5, 6, 6, 6, 6, 6 = 41 characters; the repeated two
    # hold 12.
    assert row["fraction_of_ngram_characters_in_duplicate_5grams"] == pytest.approx(12 / 41)
    # the 6-grams "aa b c d e f" and "f aa b c d e" differ: nothing repeats from n = 6
    for n in range(6, 11):
        assert row[f"fraction_of_characters_in_duplicate_{n}grams"] == 0.0
        assert row[f"fraction_of_ngram_characters_in_duplicate_{n}grams"] == 0.0


def test_overlapping_duplicate_ngrams_count_each_word_once() -> None:
    (row,) = tag("a a a a a a a")
    # 7 words; the 5-gram "a a a a a" occurs at 0, 1, 2: their union is all 7 words (not 15)
    assert row["fraction_of_characters_in_duplicate_5grams"] == 1.0
    assert row["fraction_of_ngram_characters_in_duplicate_5grams"] == 1.0  # 15 / 15
    # the 7-gram occurs once
    assert row["fraction_of_characters_in_duplicate_7grams"] == 0.0


def test_bullets_ellipses_and_duplicate_lines() -> None:
    text = "- one\n* two\n• three\n  ‣ four\nplain line…\nplain line…\n\nindented ...\n"
    (row,) = tag(text)
    # 7 lines (the blank one and the empty piece after the last newline are not lines):
    # "- one"(5) "* two"(5) "• three"(7) "‣ four"(6) "plain line…"(11) x2 "indented ..."(12)
    assert row["fraction_of_lines_starting_with_bullet"] == pytest.approx(4 / 7)
    assert row["fraction_of_lines_ending_with_ellipsis"] == pytest.approx(3 / 7)
    assert row["fraction_of_duplicate_lines"] == pytest.approx(2 / 7)  # both copies count
    assert row["fraction_of_characters_in_duplicate_lines"] == pytest.approx(22 / 57)
    # 14 words; symbols: "…" twice and "..." once; "-", "*", "•", "‣", "..." have no letter
    assert row["word_count"] == 14
    assert row["symbol_to_word_ratio"] == pytest.approx(3 / 14)
    assert row["fraction_of_words_with_alpha_character"] == pytest.approx(9 / 14)


def test_hash_symbols_count_each_occurrence() -> None:
    (row,) = tag("# Title ## x")
    assert row["symbol_to_word_ratio"] == 0.75  # 3 "#" over 4 words
    (row,) = tag("wait...... now")
    assert row["symbol_to_word_ratio"] == 1.0  # two non-overlapping "..." over 2 words


def test_duplicate_paragraphs() -> None:
    text = "Intro.\n\nSame para.\nSecond line.\n\nSame para.\nSecond line.\n\n\nEnd."
    (row,) = tag(text)
    # paragraphs: "Intro."(6), "Same para.\nSecond line."(10 + 1 + 12 = 23) x2, "End."(4)
    assert row["fraction_of_duplicate_paragraphs"] == 0.5  # 2 of 4
    assert row["fraction_of_characters_in_duplicate_paragraphs"] == pytest.approx(46 / 56)
    # lines: 6 + 10 + 12 + 10 + 12 + 4 = 54 characters, 4 lines (44 characters) repeated
    assert row["fraction_of_duplicate_lines"] == pytest.approx(4 / 6)
    assert row["fraction_of_characters_in_duplicate_lines"] == pytest.approx(44 / 54)


def test_crlf_and_surrounding_whitespace_do_not_make_lines_differ() -> None:
    (row,) = tag("same line\r\n  same line  \nother")
    assert row["fraction_of_duplicate_lines"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("text", ["", "   \n\t \n\n"])
def test_empty_and_whitespace_only_texts_get_zeros(text: str) -> None:
    (row,) = tag(text)
    assert row.pop("id") == "d0"
    assert row["word_count"] == 0
    assert all(value == 0 for value in row.values())


def test_documents_in_a_batch_are_independent() -> None:
    repeated = "one two three four five six"
    first, empty, second = tag(repeated, "", repeated)
    # identical documents in one batch do not make each other's lines or n-grams duplicates
    assert first == {**second, "id": "d0"}
    assert first["fraction_of_duplicate_lines"] == 0.0
    assert first["fraction_of_characters_in_duplicate_5grams"] == 0.0
    assert empty["word_count"] == 0


def _reference_ngram_fractions(text: str) -> dict[str, float]:
    """The documented n-gram definitions, written plainly over ``text.split()``."""
    words = text.split()
    total = sum(map(len, words))
    out: dict[str, float] = {}
    for n in range(2, 11):
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        counts = Counter(grams)
        if n <= 4:
            gram, count = counts.most_common(1)[0] if grams else ((), 0)
            value = count * sum(map(len, gram)) / total if grams else 0.0
            out[f"fraction_of_characters_in_most_common_{n}grams"] = value
            continue
        covered = [False] * len(words)
        for i, gram in enumerate(grams):
            if counts[gram] > 1:
                covered[i : i + n] = [True] * n
        covered_chars = sum(len(w) for w, c in zip(words, covered, strict=True) if c)
        out[f"fraction_of_characters_in_duplicate_{n}grams"] = (
            covered_chars / total if total else 0.0
        )
        all_chars = sum(sum(map(len, g)) for g in grams)
        repeated_chars = sum(sum(map(len, g)) for g in grams if counts[g] > 1)
        out[f"fraction_of_ngram_characters_in_duplicate_{n}grams"] = (
            repeated_chars / all_chars if all_chars else 0.0
        )
    return out


def test_vectorized_ngrams_match_a_plain_reference_on_repetitive_text() -> None:
    rng = random.Random(0)
    vocabulary = ["a", "bb", "ccc", "the", "of", "x"]
    texts = [" ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, 60))) for _ in range(40)]
    for text, row in zip(texts, tag(*texts), strict=True):
        for name, expected in _reference_ngram_fractions(text).items():
            assert row[name] == pytest.approx(expected), (name, text)


def test_dense_rank_is_exact_when_truncated_keys_collide() -> None:
    # 3 keys need 2 position bits; these two keys differ only in their lowest 2 bits, so the
    # truncated sort sees them as equal and must fall back to an exact ranking.
    keys = np.array([2**63 + 1, 2**63 + 2, 2**63 + 1], dtype=np.uint64)
    ids, counts = _dense_rank(keys)
    assert ids[0] == ids[2] != ids[1]
    assert counts.tolist() == [2, 1, 2]
    ids, counts = _dense_rank(np.array([5, 3, 5, 5], dtype=np.uint64))
    assert ids.tolist() == [1, 0, 1, 1]
    assert counts.tolist() == [3, 1, 3, 3]
