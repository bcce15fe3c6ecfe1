"""Exact deduplication: URL, text and paragraph flags and spans on constructed duplicates."""

from __future__ import annotations

import json

import polars as pl
import pytest

from olmo_assets.curation.dedup import (
    DedupConfig,
    Deduplicator,
    normalize_url,
    split_paragraphs,
)
from olmo_assets.curation.taggers.base import SPAN

CONFIG = DedupConfig(expected_documents=1000, expected_paragraphs=10_000, false_positive_rate=1e-9)

FIRST = "alpha paragraph one\nshared paragraph here\n\nunique zero"
#        0                  19 20                   41 42 43        54


def _docs(rows: list[tuple[str, str, str | None]], source: str = "web") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": [row[0] for row in rows],
            "text": [row[1] for row in rows],
            "source": [source] * len(rows),
            "metadata": [json.dumps({} if row[2] is None else {"url": row[2]}) for row in rows],
        }
    )


BATCH_ONE = _docs(
    [
        ("d0", FIRST, "https://Example.com/a#top"),
        ("d1", "different text\nshared paragraph here", "HTTPS://EXAMPLE.COM/a#bottom"),
        ("d2", FIRST, "https://example.com/A"),  # the path keeps its case: a new URL
        ("d3", "   \n\t\n", None),
    ]
)
BATCH_TWO = _docs([("d4", "shared paragraph here\nnew line", "https://example.com/a")], "books")


def _spans(frame: pl.DataFrame) -> list[list[tuple[int, int]]]:
    return [
        [(span["start"], span["end"]) for span in spans]
        for spans in frame["dedup__paragraph_spans_duplicate"].to_list()
    ]


def test_flags_spans_and_fractions_of_one_batch() -> None:
    out = Deduplicator(CONFIG).tag(BATCH_ONE)
    assert out.columns == [
        "id",
        "dedup__url_duplicate",
        "dedup__text_duplicate",
        "dedup__paragraph_spans_duplicate",
        "dedup__fraction_of_paragraphs_duplicate",
        "dedup__fraction_of_characters_in_duplicate_paragraphs",
    ]
    assert out.schema["dedup__paragraph_spans_duplicate"] == SPAN
    assert out["id"].to_list() == ["d0", "d1", "d2", "d3"]
    assert out["dedup__url_duplicate"].to_list() == [False, True, False, False]
    assert out["dedup__text_duplicate"].to_list() == [False, False, True, False]
    # Spans run through the paragraph's newline; the blank paragraph of d0/d2 never counts.
    assert _spans(out) == [[], [(15, 36)], [(0, 20), (20, 42), (43, 54)], []]
    assert out["dedup__fraction_of_paragraphs_duplicate"].to_list() == [0.0, 0.5, 1.0, 0.0]
    assert out["dedup__fraction_of_characters_in_duplicate_paragraphs"].to_list() == [
        0.0,
        21 / 36,
        53 / 54,
        0.0,
    ]


def test_duplicates_are_found_across_batches_and_sources() -> None:
    deduplicator = Deduplicator(CONFIG)
    deduplicator.tag(BATCH_ONE)
    out = deduplicator.tag(BATCH_TWO)
    assert out["dedup__url_duplicate"].to_list() == [True]
    assert out["dedup__text_duplicate"].to_list() == [False]
    assert _spans(out) == [[(0, 22)]]
    assert out["dedup__fraction_of_paragraphs_duplicate"].to_list() == [0.5]


def test_batch_boundaries_do_not_change_the_flags() -> None:
    whole = Deduplicator(CONFIG).tag(BATCH_ONE)
    split = Deduplicator(CONFIG)
    parts = pl.concat([split.tag(BATCH_ONE.slice(i, 1)) for i in range(BATCH_ONE.height)])
    assert parts.equals(whole)


def test_swapping_the_order_flags_the_other_copy() -> None:
    out = Deduplicator(CONFIG).tag(BATCH_ONE.reverse())
    assert out["id"].to_list() == ["d3", "d2", "d1", "d0"]
    assert out["dedup__url_duplicate"].to_list() == [False, False, False, True]
    assert out["dedup__text_duplicate"].to_list() == [False, False, False, True]
    assert _spans(out) == [[], [], [(15, 36)], [(0, 20), (20, 42), (43, 54)]]


def test_saved_filters_continue_the_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = Deduplicator(CONFIG)
    first.tag(BATCH_ONE)
    first.save(tmp_path / "dedup")
    resumed = Deduplicator.load(tmp_path / "dedup")
    assert resumed.config == CONFIG
    assert resumed.tag(BATCH_TWO).equals(first.tag(BATCH_TWO))
    assert resumed.stats()["texts"]["num_added"] == 3  # d0, d1, d4


def test_struct_metadata_and_missing_metadata() -> None:
    with_struct = pl.DataFrame(
        {
            "id": ["a", "b"],
            "text": ["x", "y"],
            "source": ["web", "web"],
            "metadata": [{"url": "http://A.org/p"}, {"url": "http://a.org/p#f"}],
        }
    )
    assert Deduplicator(CONFIG).tag(with_struct)["dedup__url_duplicate"].to_list() == [False, True]
    bare = with_struct.drop("metadata").with_columns(pl.lit("x").alias("text"))
    out = Deduplicator(CONFIG).tag(bare)
    assert out["dedup__url_duplicate"].to_list() == [False, False]
    assert out["dedup__text_duplicate"].to_list() == [False, True]


def test_normalize_url() -> None:
    assert normalize_url(" HTTPS://User@WWW.Example.COM:8080/Path?Q=1#frag ") == (
        "https://User@www.example.com:8080/Path?Q=1"
    )
    assert normalize_url("   ") is None


def test_split_paragraphs_offsets() -> None:
    paragraphs = split_paragraphs(["a\n\nbc\n", "", "é\n  \nxyz"])
    assert paragraphs.text == ["a", "bc", "é", "xyz"]
    assert paragraphs.doc_index.tolist() == [0, 0, 2, 2]
    assert paragraphs.start.tolist() == [0, 3, 0, 5]
    assert paragraphs.end.tolist() == [2, 6, 2, 8]


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="expected_paragraphs"):
        DedupConfig(expected_paragraphs=0)


def test_disabled_kinds_have_no_filter_and_no_columns(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = DedupConfig(url=False, paragraphs=False, expected_documents=100)
    deduplicator = Deduplicator(config)
    assert set(deduplicator.filters) == {"texts"}
    out = deduplicator.tag(BATCH_ONE)
    assert out.columns == ["id", "dedup__text_duplicate"]
    assert out["dedup__text_duplicate"].to_list() == [False, False, True, False]
    deduplicator.save(tmp_path)
    assert set(Deduplicator.load(tmp_path).filters) == {"texts"}
    with pytest.raises(ValueError, match="nothing to deduplicate"):
        DedupConfig(url=False, exact=False, paragraphs=False)


def test_an_empty_batch_gives_an_empty_frame() -> None:
    out = Deduplicator(CONFIG).tag(BATCH_ONE.clear())
    assert out.height == 0
    assert out.schema["dedup__paragraph_spans_duplicate"] == SPAN
