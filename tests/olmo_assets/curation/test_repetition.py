"""RepetitionTagger: line repeats, character runs and compression ratio on literal texts."""

from __future__ import annotations

import zlib
from typing import Any

import polars as pl

from olmo_assets.curation.taggers.repetition import ZLIB_LEVEL, RepetitionTagger


def tag(*texts: str) -> list[dict[str, Any]]:
    """Tag ``texts`` as one batch; each row without the ``repetition__`` prefix."""
    docs = pl.DataFrame(
        {"id": [f"d{i}" for i in range(len(texts))], "text": list(texts), "source": "test"}
    )
    out = RepetitionTagger().tag(docs)
    assert out.get_column("id").to_list() == docs.get_column("id").to_list()
    return [
        {key.removeprefix("repetition__"): value for key, value in row.items()}
        for row in out.to_dicts()
    ]


def test_repeated_lines_ignore_blank_lines_and_surrounding_whitespace() -> None:
    (row,) = tag("abc\nabc\n  abc  \n\n\nxyz")
    # non-blank lines: abc, abc, abc, xyz: 4 lines, 2 distinct, 2 repeat an earlier line
    assert row["max_line_repeat_count"] == 3
    assert row["fraction_of_repeated_lines"] == 0.5


def test_no_repeated_line() -> None:
    (row,) = tag("one\ntwo\nthree")
    assert row["max_line_repeat_count"] == 1
    assert row["fraction_of_repeated_lines"] == 0.0


def test_longest_character_run() -> None:
    (row,) = tag("aaaa!!!!!!b  …………")
    assert row["max_char_run"] == 6  # "!!!!!!"; "…" x4 is shorter


def test_runs_do_not_cross_documents() -> None:
    rows = tag("xaa", "", "aaa", "ab")
    # "xaa" + "aaa" would be a run of 5 if documents were joined
    assert [row["max_char_run"] for row in rows] == [2, 0, 3, 1]


def test_compression_ratio() -> None:
    repetitive, varied, empty = tag("ab" * 500, "The quick brown fox jumps over the lazy dog.", "")
    expected = len(zlib.compress(b"ab" * 500, ZLIB_LEVEL)) / 1000
    assert repetitive["compression_ratio"] == expected
    assert repetitive["compression_ratio"] < 0.05
    assert varied["compression_ratio"] > 1.0  # zlib's header outweighs a 44-byte text
    assert empty["compression_ratio"] == 1.0


def test_empty_and_whitespace_only_texts() -> None:
    empty, blank = tag("", " \n\t\n")
    assert empty == {
        "id": "d0",
        "max_line_repeat_count": 0,
        "fraction_of_repeated_lines": 0.0,
        "max_char_run": 0,
        "compression_ratio": 1.0,
    }
    assert blank["max_line_repeat_count"] == 0
    assert blank["max_char_run"] == 1
