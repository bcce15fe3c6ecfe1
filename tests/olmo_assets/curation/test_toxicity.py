"""The bad-words tagger and the fastText classifier interface (with a stub model)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pytest

from olmo_assets.curation.taggers.base import SPAN
from olmo_assets.curation.taggers.toxicity import (
    BadWordsTagger,
    FastTextClassifierTagger,
    split_sentences,
)


def _docs(*texts: str | None) -> pl.DataFrame:
    return pl.DataFrame(
        {"id": [f"d{i}" for i in range(len(texts))], "text": list(texts), "source": "web"},
        schema={"id": pl.String, "text": pl.String, "source": pl.String},
    )


@pytest.fixture(scope="module")
def badwords() -> BadWordsTagger:
    return BadWordsTagger()


def test_badwords_whole_words_only(badwords: BadWordsTagger) -> None:
    out = badwords.tag(_docs("This class was assessed by a passing bass player.", "an ass."))
    assert out["badwords__count"].to_list() == [0, 1]
    assert out["badwords__spans"][1].to_list() == [{"start": 3, "end": 6}]


def test_badwords_case_insensitive_spans_and_fraction(badwords: BadWordsTagger) -> None:
    text = "Café: what an ASS! Shit,\nJERK\toff now"
    row = badwords.tag(_docs(text)).row(0, named=True)
    assert [text[s["start"] : s["end"]] for s in row["badwords__spans"]] == [
        "ASS",
        "Shit",
        "JERK\toff",
    ]
    assert row["badwords__spans"][0] == {"start": 14, "end": 17}
    assert row["badwords__count"] == 3
    assert row["badwords__fraction_of_words"] == 3 / 8


def test_badwords_rows_columns_and_empty_text(badwords: BadWordsTagger) -> None:
    out = badwords.tag(_docs("", None, "fine words only", "fuck"))
    assert out.columns == [
        "id",
        "badwords__count",
        "badwords__fraction_of_words",
        "badwords__spans",
    ]
    assert out["id"].to_list() == ["d0", "d1", "d2", "d3"]
    assert out.schema["badwords__spans"] == SPAN
    assert out["badwords__count"].to_list() == [0, 0, 0, 1]
    assert out["badwords__fraction_of_words"].to_list() == [0.0, 0.0, 0.0, 1.0]


def test_custom_word_list(tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("# a comment\nfoo\n\nfoo bar  # the longer term wins\n", encoding="utf-8")
    out = BadWordsTagger(words).tag(_docs("foo bar, foo, food"))
    assert out["badwords__spans"][0].to_list() == [
        {"start": 0, "end": 7},
        {"start": 9, "end": 12},
    ]
    words.write_text("naïve\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"words\.txt:1: term 'naïve' is not ASCII"):
        BadWordsTagger(words)
    with pytest.raises(FileNotFoundError, match=r"missing\.txt does not exist"):
        BadWordsTagger(tmp_path / "missing.txt")


def test_sentences() -> None:
    text = 'Hello world. How are you?\nFine  \n\n  "Quoted!" e.g. this'
    assert [text[s:e] for s, e in split_sentences(text)] == [
        "Hello world.",
        "How are you?",
        "Fine",
        '"Quoted!"',
        "e.g.",
        "this",
    ]
    assert split_sentences("") == []


class _StubClassifier:
    """Scores 0.9 toxic for any text containing 'awful', else 0.2; best label first."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def predict(self, text: str, k: int = 1) -> tuple[Sequence[str], Sequence[float]]:
        self.seen.append(text)
        toxic = 0.9 if "awful" in text else 0.2
        labels = ("__label__toxic", "__label__non_toxic")
        scores = (toxic, 1 - toxic)
        order = sorted(range(2), key=lambda i: -scores[i])
        return tuple(labels[i] for i in order), tuple(scores[i] for i in order)


def test_classifier_per_sentence() -> None:
    stub = _StubClassifier()
    tagger = FastTextClassifierTagger(stub, name="jigsaw_hate", positive_label="toxic")
    text = "You are nice. You are awful!\nBye"
    out = tagger.tag(_docs(text, ""))
    assert out.columns == [
        "id",
        "jigsaw_hate__sentence_spans",
        "jigsaw_hate__sentence_scores",
        "jigsaw_hate__max_score",
    ]
    assert out.schema["jigsaw_hate__sentence_spans"] == SPAN
    first = out.row(0, named=True)
    assert first["jigsaw_hate__sentence_spans"] == [
        {"start": 0, "end": 13},
        {"start": 14, "end": 28},
        {"start": 29, "end": 32},
    ]
    assert first["jigsaw_hate__sentence_scores"] == [0.2, 0.9, 0.2]
    assert first["jigsaw_hate__max_score"] == 0.9
    assert out.row(1) == ("d1", [], [], 0.0)
    assert stub.seen == ["You are nice.", "You are awful!", "Bye"]


def test_classifier_per_document() -> None:
    stub = _StubClassifier()
    tagger = FastTextClassifierTagger(stub, positive_label="__label__toxic", level="document")
    out = tagger.tag(_docs("awful\nthings", "kind words", None))
    assert out.columns == ["id", "toxicity__score"]
    assert out["toxicity__score"].to_list() == [0.9, 0.2, 0.0]
    assert stub.seen == ["awful things", "kind words"]
    # A label the model never returns scores 0.
    absent = FastTextClassifierTagger(stub, positive_label="nsfw", level="document")
    assert absent.tag(_docs("awful"))["toxicity__score"].to_list() == [0.0]


def test_classifier_arguments_are_checked(tmp_path: Path) -> None:
    stub = _StubClassifier()
    with pytest.raises(ValueError, match="name='Bad__Name'"):
        FastTextClassifierTagger(stub, name="Bad__Name", positive_label="toxic")
    with pytest.raises(ValueError, match="level='paragraph'"):
        FastTextClassifierTagger(stub, positive_label="toxic", level="paragraph")
    with pytest.raises(FileNotFoundError, match=r"jigsaw\.bin does not exist"):
        FastTextClassifierTagger(tmp_path / "jigsaw.bin", positive_label="toxic")
    # Each instance writes under its own name; the class default is untouched.
    assert FastTextClassifierTagger(stub, name="nsfw", positive_label="x").name == "nsfw"
    assert FastTextClassifierTagger.name == "toxicity"


def test_classifier_from_a_model_file_checks_its_labels(tmp_path: Path) -> None:
    from olmo_assets.curation.taggers.language import fasttext_labels, locate_language_model

    model = locate_language_model()  # a real fastText classifier: 176 language labels
    labels = fasttext_labels(model)
    assert len(labels) == 176 and labels[0] == "__label__en"
    tagger = FastTextClassifierTagger(model, name="english", positive_label="en", level="document")
    scores = tagger.tag(_docs("This is plainly an English sentence.", "Ceci est en français."))
    english, french = scores["english__score"].to_list()
    assert english > 0.5 > french
    with pytest.raises(ValueError, match=r"has no label 'toxic'; its labels are 'en', 'ru'"):
        FastTextClassifierTagger(model, positive_label="toxic")
    fake = tmp_path / "fake.bin"
    fake.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match=r"fake\.bin is not a fastText model file"):
        FastTextClassifierTagger(fake, positive_label="toxic")
