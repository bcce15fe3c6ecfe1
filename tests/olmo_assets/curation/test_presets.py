"""Rule presets: they load, their SQL runs in DuckDB over tagger attributes, thresholds hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from olmo_assets.curation import presets
from olmo_assets.curation.presets import available_presets, load_preset
from olmo_assets.curation.taggers.base import SPAN
from olmo_assets.curation.taggers.c4 import C4Tagger
from olmo_assets.curation.taggers.gopher import GopherTagger


def schema_of(tagger: GopherTagger | C4Tagger) -> pl.Schema:
    docs = pl.DataFrame({"id": ["x"], "text": ["Some text."], "source": ["test"]})
    return tagger.tag(docs).schema


def removals(
    rules: list[dict[str, str]], rows: list[dict[str, Any]], schema: pl.Schema
) -> dict[str, list[bool]]:
    """Each ``remove_if`` rule's verdict on each row, evaluated by DuckDB over a Polars frame."""
    attributes = pl.DataFrame(rows, schema=schema)
    connection = duckdb.connect()
    connection.register("attributes", attributes)
    verdicts = {}
    for rule in rules:
        if "remove_if" in rule:
            query = f"SELECT ({rule['remove_if']}) AS removed FROM attributes"
            verdicts[rule["name"]] = [bool(v) for (v,) in connection.execute(query).fetchall()]
    return verdicts


# A clean English web page's Gopher attributes: every rule of both presets keeps it.
CLEAN_PAGE = {
    "word_count": 400,
    "mean_word_length": 4.6,
    "median_word_length": 4.0,
    "symbol_to_word_ratio": 0.0,
    "fraction_of_words_with_alpha_character": 0.97,
    "required_word_count": 25,
    "fraction_of_characters_in_most_common_2grams": 0.02,
    "fraction_of_characters_in_most_common_3grams": 0.01,
    "fraction_of_characters_in_most_common_4grams": 0.01,
    **{f"fraction_of_characters_in_duplicate_{n}grams": 0.0 for n in range(5, 11)},
    **{f"fraction_of_ngram_characters_in_duplicate_{n}grams": 0.0 for n in range(5, 11)},
    "fraction_of_lines_starting_with_bullet": 0.1,
    "fraction_of_lines_ending_with_ellipsis": 0.0,
    "fraction_of_duplicate_lines": 0.0,
    "fraction_of_characters_in_duplicate_lines": 0.0,
    "fraction_of_duplicate_paragraphs": 0.0,
    "fraction_of_characters_in_duplicate_paragraphs": 0.0,
}

# rule -> (attribute values just kept, attribute values just removed). The thresholds are the
# ones both presets share: the Gopher paper's (Rae et al. 2021, arXiv:2112.11446, appendix A)
# as Dolma v1.5 applies them (github.com/allenai/dolma, configs/dolma-v1_5/mixing/cc-head.yaml).
COMMON_CASES: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {
    "gopher_word_count": (
        [{"word_count": 50}, {"word_count": 100_000}],
        [{"word_count": 49}, {"word_count": 100_001}],
    ),
    "gopher_symbol_to_word_ratio": (
        [{"symbol_to_word_ratio": 0.1}],
        [{"symbol_to_word_ratio": 0.11}],
    ),
    "gopher_words_with_alpha_character": (
        [{"fraction_of_words_with_alpha_character": 0.8}],
        [{"fraction_of_words_with_alpha_character": 0.79}],
    ),
    "gopher_required_words": ([{"required_word_count": 2}], [{"required_word_count": 1}]),
    "gopher_bullet_lines": (
        [{"fraction_of_lines_starting_with_bullet": 0.9}],
        [{"fraction_of_lines_starting_with_bullet": 0.91}],
    ),
    "gopher_ellipsis_lines": (
        [{"fraction_of_lines_ending_with_ellipsis": 0.3}],
        [{"fraction_of_lines_ending_with_ellipsis": 0.31}],
    ),
    "gopher_duplicate_lines": (
        [{"fraction_of_duplicate_lines": 0.3}],
        [{"fraction_of_duplicate_lines": 0.31}],
    ),
    **{
        f"gopher_most_common_{n}gram": (
            [{f"fraction_of_characters_in_most_common_{n}grams": limit}],
            [{f"fraction_of_characters_in_most_common_{n}grams": limit + 0.01}],
        )
        for n, limit in ((2, 0.2), (3, 0.18), (4, 0.16))
    },
}
DUPLICATE_NGRAM_LIMITS = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}

DOLMA_CASES = {
    **COMMON_CASES,
    "gopher_median_word_length": (
        [{"median_word_length": 3.0}, {"median_word_length": 10.0}],
        [{"median_word_length": 2.5}, {"median_word_length": 10.5}],
    ),
    "gopher_characters_in_duplicate_lines": (
        [{"fraction_of_characters_in_duplicate_lines": 0.3}],
        [{"fraction_of_characters_in_duplicate_lines": 0.31}],
    ),
    **{
        f"gopher_duplicate_{n}grams": (
            [
                {
                    f"fraction_of_ngram_characters_in_duplicate_{n}grams": limit,
                    f"fraction_of_characters_in_duplicate_{n}grams": 1.0,
                }
            ],
            [{f"fraction_of_ngram_characters_in_duplicate_{n}grams": limit + 0.01}],
        )
        for n, limit in DUPLICATE_NGRAM_LIMITS.items()
    },
}

PAPER_CASES = {
    **COMMON_CASES,
    "gopher_mean_word_length": (
        [{"mean_word_length": 3.0, "median_word_length": 1.0}, {"mean_word_length": 10.0}],
        [{"mean_word_length": 2.9}, {"mean_word_length": 10.1}],
    ),
    "gopher_characters_in_duplicate_lines": (
        [{"fraction_of_characters_in_duplicate_lines": 0.2}],
        [{"fraction_of_characters_in_duplicate_lines": 0.21}],
    ),
    "gopher_duplicate_paragraphs": (
        [{"fraction_of_duplicate_paragraphs": 0.3}],
        [{"fraction_of_duplicate_paragraphs": 0.31}],
    ),
    "gopher_characters_in_duplicate_paragraphs": (
        [{"fraction_of_characters_in_duplicate_paragraphs": 0.2}],
        [{"fraction_of_characters_in_duplicate_paragraphs": 0.21}],
    ),
    **{
        f"gopher_duplicate_{n}grams": (
            [
                {
                    f"fraction_of_characters_in_duplicate_{n}grams": limit,
                    f"fraction_of_ngram_characters_in_duplicate_{n}grams": 1.0,
                }
            ],
            [{f"fraction_of_characters_in_duplicate_{n}grams": limit + 0.01}],
        )
        for n, limit in DUPLICATE_NGRAM_LIMITS.items()
    },
}


def test_available_presets() -> None:
    assert available_presets() == ["c4", "c4_original", "dolma_v1_5_gopher", "gopher_paper"]


@pytest.mark.parametrize(
    ("preset", "cases"), [("dolma_v1_5_gopher", DOLMA_CASES), ("gopher_paper", PAPER_CASES)]
)
def test_gopher_presets_keep_and_remove_at_their_thresholds(
    preset: str, cases: dict[str, Any]
) -> None:
    rules = load_preset(preset)
    assert sorted(rule["name"] for rule in rules) == sorted(cases)
    schema = schema_of(GopherTagger())
    clean = {"id": "clean", **{f"gopher__{key}": value for key, value in CLEAN_PAGE.items()}}
    assert set(clean) == set(schema), "CLEAN_PAGE must cover exactly the tagger's attributes"
    for name, (kept, removed) in cases.items():
        rows = [clean] + [
            {**clean, **{f"gopher__{key}": value for key, value in change.items()}}
            for change in kept + removed
        ]
        verdicts = removals(rules, rows, schema)
        # The clean page and the threshold values stay; each removed row fails this rule only.
        assert verdicts[name] == [False] * (1 + len(kept)) + [True] * len(removed), name
        for other, other_verdicts in verdicts.items():
            if other != name:
                assert not any(other_verdicts), (name, other)


PAGE = (
    "The river town grew slowly over two centuries. Farmers brought grain to the mill, and "
    "merchants built warehouses along the docks. When the railway arrived, the old ferry lost "
    "its trade, but new families came to work in the factories. Today the museum keeps records "
    "of that time, with maps and letters that describe how people lived and what they hoped to "
    "find."
)
BOILERPLATE = "\n".join(["Click here to subscribe to our newsletter today."] * 20)


def test_gopher_presets_on_tagged_documents() -> None:
    docs = pl.DataFrame(
        {"id": ["page", "boilerplate"], "text": [PAGE, BOILERPLATE], "source": "web"}
    )
    attributes = GopherTagger().tag(docs)
    for preset in ("dolma_v1_5_gopher", "gopher_paper"):
        verdicts = removals(load_preset(preset), attributes.to_dicts(), attributes.schema)
        page_failures = [name for name, (page, _) in verdicts.items() if page]
        boilerplate_failures = {name for name, (_, boilerplate) in verdicts.items() if boilerplate}
        assert page_failures == [], preset
        assert {
            "gopher_duplicate_lines",
            "gopher_characters_in_duplicate_lines",
        } <= boilerplate_failures


def test_c4_presets() -> None:
    (rule,) = load_preset("c4")  # Dolma v1.5: delete lines without terminal punctuation, only
    assert rule == {
        "name": "c4_no_ending_punctuation",
        "remove_spans": "c4__no_ending_punctuation_spans",
    }
    schema = schema_of(C4Tagger())
    assert schema[rule["remove_spans"]] == SPAN

    original = load_preset("c4_original")
    span_rules = [r for r in original if "remove_spans" in r]
    assert [r["remove_spans"] for r in span_rules] == ["c4__drop_spans"]
    clean = {name: False if dtype == pl.Boolean else None for name, dtype in schema.items()}
    rows = [clean] + [
        {**clean, f"c4__{flag}": True}
        for flag in ("has_lorem_ipsum", "has_curly_bracket", "has_naughty_word")
    ]
    verdicts = removals(original, rows, schema)
    assert verdicts == {
        "c4_lorem_ipsum": [False, True, False, False],
        "c4_curly_bracket": [False, False, True, False],
        "c4_naughty_word": [False, False, False, True],
    }


def test_unknown_preset_lists_the_available_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown rule preset 'dolma'.*dolma_v1_5_gopher.*gopher_paper"
    ):
        load_preset("dolma")
    with pytest.raises(ValueError, match="unknown rule preset"):
        load_preset("../presets/c4")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", "non-empty YAML list"),
        ("- just a string", "expected a mapping"),
        ("- name: r\n  remove_if: 'x > 1'\n  threshold: 3", "unknown keys"),
        ("- remove_if: 'x > 1'", "non-empty string 'name'"),
        ("- name: r", "exactly one of"),
        ("- name: r\n  remove_if: 'x'\n  remove_spans: s", "exactly one of"),
        ("- name: r\n  remove_if: 'x'\n- name: r\n  remove_if: 'y'", "duplicate rule name"),
    ],
)
def test_malformed_presets_are_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, message: str
) -> None:
    (tmp_path / "broken.yaml").write_text(content, encoding="utf-8")
    monkeypatch.setattr(presets, "PRESETS_DIR", tmp_path)
    with pytest.raises(ValueError, match=message):
        load_preset("broken")
