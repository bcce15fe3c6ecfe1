"""Decontamination: Paloma's 13-token paragraphs flag training documents; code is exempt."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from olmo_assets.curation.decontaminate import ContaminationIndex
from olmo_assets.curation.taggers.base import SPAN

THIRTEEN = "one two three four five six seven eight nine ten eleven twelve thirteen"
TWELVE = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
EVAL_TEXT = f"Question 1\n{THIRTEEN}\n{TWELVE}\nshort line"


def _docs(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": [row[0] for row in rows],
            "text": [row[1] for row in rows],
            "source": [row[2] for row in rows],
        }
    )


TRAINING = _docs(
    [
        ("has-13", f"intro\n  {THIRTEEN} \r\noutro", "web"),
        ("has-12", f"{TWELVE}\nmore", "web"),
        ("code-13", f"# {0}\n{THIRTEEN}", "code"),
        ("twice", f"{THIRTEEN}\n{THIRTEEN}", "books"),
        ("clean", "Question 1\nshort line\nthirteen", "web"),
    ]
)


def _spans(frame: pl.DataFrame) -> list[list[tuple[int, int]]]:
    return [
        [(span["start"], span["end"]) for span in spans]
        for spans in frame["decontam__spans"].to_list()
    ]


def test_a_13_word_paragraph_flags_the_document_with_its_span() -> None:
    index = ContaminationIndex.from_texts([EVAL_TEXT])
    assert index.num_paragraphs == 1
    out = index.tag(TRAINING)
    assert out.columns == [
        "id",
        "decontam__contaminated_paragraphs",
        "decontam__spans",
        "decontam__is_contaminated",
    ]
    assert out.schema["decontam__spans"] == SPAN
    assert out["decontam__is_contaminated"].to_list() == [True, False, False, True, False]
    assert out["decontam__contaminated_paragraphs"].to_list() == [1, 0, 0, 2, 0]
    # The whole line (surrounding whitespace, "\r" and newline included) is the span.
    assert _spans(out) == [[(6, 6 + 2 + len(THIRTEEN) + 3)], [], [], [(0, 72), (72, 143)], []]


def test_matching_is_exact_after_stripping() -> None:
    index = ContaminationIndex.from_texts([EVAL_TEXT])
    variants = _docs(
        [
            ("case", THIRTEEN.upper(), "web"),
            ("inner-space", THIRTEEN.replace(" ", "  "), "web"),
            ("tabs", f"\t{THIRTEEN}\t", "web"),
        ]
    )
    assert index.tag(variants)["decontam__is_contaminated"].to_list() == [False, False, True]


def test_a_tokenizer_changes_what_counts_as_13_tokens() -> None:
    def characters(text: str) -> list[str]:
        return list(text)

    index = ContaminationIndex.from_texts([EVAL_TEXT], tokenizer=characters)
    # Both long lines now count; "Question 1" and "short line" have 10 characters.
    assert index.num_paragraphs == 2
    assert index.tag(TRAINING)["decontam__is_contaminated"].to_list() == [
        True,
        True,
        False,
        True,
        False,
    ]


def test_the_olmo_tokenizer_can_count_tokens(olmo_tokenizer) -> None:  # type: ignore[no-untyped-def]
    index = ContaminationIndex.from_texts([EVAL_TEXT], tokenizer=olmo_tokenizer.encode)
    # "alpha ... mu": 12 words but more than 13 tokens under BPE.
    assert len(olmo_tokenizer.encode(TWELVE)) >= 13
    assert index.num_paragraphs == 2


def test_exempt_sources_are_configurable() -> None:
    index = ContaminationIndex.from_texts([EVAL_TEXT], exempt_sources={"books"})
    assert index.tag(TRAINING)["decontam__is_contaminated"].to_list() == [
        True,
        False,
        True,
        False,
        False,
    ]


def test_from_jsonl_reads_the_text_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    plain = tmp_path / "eval.jsonl"
    plain.write_text(json.dumps({"question": THIRTEEN}) + "\n\n" + json.dumps({"question": "x"}))
    packed = tmp_path / "more.jsonl.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as out:
        out.write(json.dumps({"question": f"{TWELVE} nu"}) + "\n")
    index = ContaminationIndex.from_jsonl([plain, packed], text_field="question")
    assert index.num_paragraphs == 2
    assert index.tag(TRAINING)["decontam__is_contaminated"].to_list() == [
        True,
        False,
        False,
        True,
        False,
    ]
    with pytest.raises(ValueError, match=r"eval.jsonl:1 has no field 'text'"):
        ContaminationIndex.from_jsonl([plain])
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl"):
        ContaminationIndex.from_jsonl([tmp_path / "missing.jsonl"])


def test_save_load_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    index = ContaminationIndex.from_texts([EVAL_TEXT], exempt_sources={"code", "math"})
    index.save(tmp_path / "decontam")
    loaded = ContaminationIndex.load(tmp_path / "decontam")
    assert loaded.stats() == index.stats()
    assert loaded.tag(TRAINING).equals(index.tag(TRAINING))


def test_an_empty_index_flags_nothing() -> None:
    index = ContaminationIndex.from_texts(["too short"])
    assert index.num_paragraphs == 0
    assert not index.tag(TRAINING)["decontam__is_contaminated"].any()
