"""C4Tagger: each line rule on literal documents, with spans counted by hand."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from olmo_assets.curation.taggers.base import SPAN
from olmo_assets.curation.taggers.c4 import NAUGHTY_WORDS_PATH, C4Tagger


def tag(*texts: str) -> list[dict[str, Any]]:
    """Tag ``texts`` as one batch; each row without the ``c4__`` prefix."""
    docs = pl.DataFrame(
        {"id": [f"d{i}" for i in range(len(texts))], "text": list(texts), "source": "test"}
    )
    out = C4Tagger().tag(docs)
    assert out.get_column("id").to_list() == docs.get_column("id").to_list()
    assert out.schema["c4__drop_spans"] == SPAN
    assert out.schema["c4__no_ending_punctuation_spans"] == SPAN
    return [
        {key.removeprefix("c4__"): value for key, value in row.items()} for row in out.to_dicts()
    ]


def spans(*ranges: tuple[int, int]) -> list[dict[str, int]]:
    return [{"start": start, "end": end} for start, end in ranges]


DOCUMENT = (
    "The first line is fine.\n"  # [0, 24): 23 characters and its newline; kept
    "no punctuation here\n"  # [24, 44): no terminal punctuation
    "Too short.\n"  # [44, 55): 2 words
    "Enable JavaScript to continue.\n"  # [55, 86): "javascript"
    "\n"  # [86, 87): a blank line ends with no punctuation
    "Last line ends well!"  # [87, 107): kept; the last line has no newline
)


def test_each_line_rule_on_a_literal_document() -> None:
    assert len(DOCUMENT) == 107
    (row,) = tag(DOCUMENT)
    assert row["no_ending_punctuation_spans"] == spans((24, 44), (86, 87))
    assert row["drop_spans"] == spans((24, 44), (44, 55), (55, 86), (86, 87))
    assert row["line_count"] == 6
    assert row["lines_dropped"] == 4
    assert row["fraction_of_characters_removed"] == pytest.approx((20 + 11 + 31 + 1) / 107)
    assert row["has_javascript"] is True
    assert row["has_lorem_ipsum"] is False
    assert row["has_curly_bracket"] is False
    assert row["has_naughty_word"] is False


def test_deleting_the_drop_spans_leaves_the_kept_lines() -> None:
    (row,) = tag(DOCUMENT)
    kept, position = [], 0
    for span in row["drop_spans"]:
        kept.append(DOCUMENT[position : span["start"]])
        position = span["end"]
    kept.append(DOCUMENT[position:])
    assert "".join(kept) == "The first line is fine.\nLast line ends well!"


def test_terminal_punctuation_variants_and_trailing_whitespace() -> None:
    text = (
        'He said "stop here."\n'  # [0, 21): ends with '"': kept
        "She said “go on now.”\n"  # [21, 43): ends with the closing curly quote: kept
        "Is this a question? \t\n"  # [43, 65): trailing whitespace is stripped: kept
        "A list of things:\n"  # [65, 83): ':' is not terminal
        "It was the dog’s"  # [83, 99): ’ is not terminal; last line, no newline
    )
    (row,) = tag(text)
    assert row["no_ending_punctuation_spans"] == spans((65, 83), (83, 99))
    assert row["drop_spans"] == spans((65, 83), (83, 99))


def test_short_lines_need_three_words() -> None:
    text = "Short!\nThis short.\nBarely above limit!\nthis is last frontier."
    # "Short!" [0, 7) and "This short." [7, 19) have 1 and 2 words; the others have 3 and 4
    (row,) = tag(text)
    assert row["no_ending_punctuation_spans"] == []
    assert row["drop_spans"] == spans((0, 7), (7, 19))
    assert row["lines_dropped"] == 2


def test_document_flags() -> None:
    lorem, curly, naughty, scunthorpe = tag(
        "Lorem Ipsum dolor sit amet, consectetur.",
        "function f() { return 1; }",
        "What the FUCK is this thing.",
        "Scunthorpe is a town in England.",
    )
    assert lorem["has_lorem_ipsum"] and not lorem["has_curly_bracket"]
    assert curly["has_curly_bracket"] and not curly["has_lorem_ipsum"]
    assert naughty["has_naughty_word"]  # case-insensitive
    assert not scunthorpe["has_naughty_word"]  # listed words match whole words only
    assert not any(row["has_javascript"] for row in (lorem, curly, naughty, scunthorpe))


def test_naughty_phrases_match_across_words() -> None:
    phrases = [
        line for line in NAUGHTY_WORDS_PATH.read_text(encoding="utf-8").splitlines() if " " in line
    ]
    assert phrases, "the list should hold a phrase to test"
    (row,) = tag(f"They searched for {phrases[0]} online.")
    assert row["has_naughty_word"]


@pytest.mark.parametrize(
    ("text", "line_count"),
    [("", 0), ("One two three.\n", 1), ("One two three.", 1)],
)
def test_empty_text_and_the_piece_after_a_final_newline(text: str, line_count: int) -> None:
    (row,) = tag(text)
    assert row["line_count"] == line_count
    assert row["drop_spans"] == []
    assert row["lines_dropped"] == 0
    assert row["fraction_of_characters_removed"] == 0.0


def test_spans_are_per_document_in_a_batch() -> None:
    first, empty, second = tag("no period\nFine line here.", "", "Fine line here.\nno period")
    assert first["drop_spans"] == spans((0, 10))
    assert empty["drop_spans"] == []
    assert second["drop_spans"] == spans((16, 25))
