"""Toxic content: any fastText classifier (Dolma's Jigsaw models) and an offline bad-words list.

Dolma scores each sentence with fastText classifiers trained on the Jigsaw toxic-comment data
(hate speech and NSFW; about 0.4 GB each, downloaded from dolma-artifacts.org) and removes
sentences scoring >= 0.4. :class:`FastTextClassifierTagger` runs such a model, or any
fastText classifier a user has, from a local file, at document or sentence level; the
threshold is a rule over its scores. A curation config declares it under
``fasttext_classifiers`` (:class:`~olmo_assets.curation.config.FastTextClassifierConfig`)
and names it in ``taggers``. The mixer removes whole documents (a rule such as
``max_score >= 0.4``); dropping only the toxic sentences, as Dolma does, is not offered.

Nothing here downloads, so the offline default is :class:`BadWordsTagger`: occurrences of the
terms of ``data/badwords_en.txt`` (a modest English list of profanity, sexual terms and slurs
written for this lab in the style of LDNOOBW's "List of Dirty, Naughty, Obscene and Otherwise
Bad Words" that C4 filters with; not a copy of it), matched case-insensitively on word
boundaries.

Sentences are split by a regular expression (Dolma uses blingfire or NLTK's Punkt, neither a
dependency here): a sentence starts at a non-space character and ends after a run of
``.``, ``!`` or ``?`` (and closing quotes or brackets) followed by whitespace, or at the last
non-space character of its line. Abbreviations such as "e.g." therefore end a sentence.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import polars as pl

from olmo_assets.curation.config import CLASSIFIER_LEVELS
from olmo_assets.curation.taggers.base import SPAN, Tagger, attribute
from olmo_assets.curation.taggers.language import (
    FastTextModel,
    fasttext_labels,
    load_fasttext_model,
)
from olmo_assets.curation.taggers.pii import matching_lines

__all__ = [
    "DEFAULT_BADWORDS",
    "LEVELS",
    "BadWordsTagger",
    "FastTextClassifierTagger",
    "check_classifier_model",
    "load_terms",
    "split_sentences",
]

#: Where a classifier is applied: the whole document, or each sentence.
LEVELS = CLASSIFIER_LEVELS
#: The offline default list (one lowercase term per line, ``#`` comments).
DEFAULT_BADWORDS = Path(__file__).parent / "data" / "badwords_en.txt"

_LABEL_PREFIX = "__label__"
_SENTENCE = re.compile(r"\S[^\n]*?(?:[.!?]+[\"'”’)\]]*(?=\s|\Z)|(?=\n)|\Z)")
_NAME = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character spans of the sentences of ``text`` (module docstring)."""
    # Trailing spaces of a line are trimmed here: a look-ahead for them would be quadratic.
    return [(m.start(), m.start() + len(m.group().rstrip())) for m in _SENTENCE.finditer(text)]


def check_classifier_model(path: str | os.PathLike[str], positive_label: str) -> None:
    """Check that ``path`` is a fastText model with the label ``positive_label``.

    Raises ``FileNotFoundError`` naming a missing file, ``ValueError`` for a file that is not
    a fastText model or a label the model does not have (listing some of its labels).
    """
    label = _LABEL_PREFIX + positive_label.removeprefix(_LABEL_PREFIX)
    labels = fasttext_labels(path)
    if label not in labels:
        shown = ", ".join(repr(name.removeprefix(_LABEL_PREFIX)) for name in labels[:10])
        more = f" and {len(labels) - 10} more" if len(labels) > 10 else ""
        raise ValueError(
            f"fastText model {path} has no label {positive_label!r}; its labels are {shown}{more}"
        )


class FastTextClassifierTagger(Tagger):
    """The probability of ``positive_label`` under a fastText classifier (``{name}__*``).

    ``model`` is a model file's path (loaded with ``fasttext-predict``, after
    :func:`check_classifier_model`) or an object with fastText's ``predict(text, k)``. ``name`` prefixes the columns, so two classifiers (e.g.
    ``jigsaw_hatespeech`` and ``jigsaw_nsfw``) can run side by side. ``positive_label`` is
    the label whose probability is the score, with or without fastText's ``__label__``
    prefix (Dolma's Jigsaw models are binary: for the NSFW one, ``nsfw`` against
    ``non-nsfw``).

    Columns with ``level="document"``: ``score``, the text's score with newlines as spaces.
    With ``level="sentence"`` (Dolma's): ``sentence_spans`` (SPAN), ``sentence_scores``
    (aligned with the spans) and ``max_score`` (0 for a document with no sentence). Every
    score is in [0, 1]; a label the model does not return scores 0.
    """

    name = "toxicity"

    def __init__(
        self,
        model: str | os.PathLike[str] | FastTextModel,
        *,
        name: str = "toxicity",
        positive_label: str,
        level: str = "sentence",
    ) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"FastTextClassifierTagger: name={name!r} must be lowercase letters, digits and "
                "single underscores, starting with a letter (it prefixes column names)"
            )
        if level not in LEVELS:
            raise ValueError(
                f"FastTextClassifierTagger: level={level!r} is not one of {', '.join(LEVELS)}"
            )
        if not positive_label.removeprefix(_LABEL_PREFIX):
            raise ValueError("FastTextClassifierTagger: positive_label is empty")
        # The base class declares `name` per class; one classifier class serves many models,
        # so each instance carries the name its columns are written under.
        self.__dict__["name"] = name
        self.positive_label = _LABEL_PREFIX + positive_label.removeprefix(_LABEL_PREFIX)
        self.level = level
        if isinstance(model, str | os.PathLike):
            check_classifier_model(model, positive_label)
            model = load_fasttext_model(model)
        self.model = model

    def score(self, text: str) -> float:
        """The probability of the positive label for one piece of text."""
        line = text.replace("\n", " ").strip()
        if not line:
            return 0.0
        labels, scores = self.model.predict(line, k=-1)
        for label, score in zip(labels, scores, strict=True):
            if label == self.positive_label:
                return min(max(float(score), 0.0), 1.0)
        return 0.0

    def tag(self, docs: pl.DataFrame) -> pl.DataFrame:
        texts = docs["text"].fill_null("").to_list()
        if self.level == "document":
            columns = {"score": pl.Series([self.score(t) for t in texts], dtype=pl.Float64)}
        else:
            spans, scores = [], []
            for text in texts:
                sentences = split_sentences(text)
                spans.append([{"start": s, "end": e} for s, e in sentences])
                scores.append([self.score(text[s:e]) for s, e in sentences])
            columns = {
                "sentence_spans": pl.Series(spans, dtype=SPAN),
                "sentence_scores": pl.Series(scores, dtype=pl.List(pl.Float64)),
                "max_score": pl.Series([max(s, default=0.0) for s in scores], dtype=pl.Float64),
            }
        return docs.select("id").with_columns(
            **{attribute(self.name, key): column for key, column in columns.items()}
        )


def load_terms(path: str | os.PathLike[str]) -> list[str]:
    """The terms of a word-list file: one per line, ``#`` starts a comment, blanks ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"word list {path} does not exist; pass the list file's path")
    terms = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        term = " ".join(line.split("#", 1)[0].split()).lower()
        if not term:
            continue
        if not term.isascii():
            raise ValueError(
                f"{path}:{number}: term {term!r} is not ASCII; this matcher uses ASCII word "
                "boundaries and case folding, so lists must be ASCII"
            )
        terms.append(term)
    if not terms:
        raise ValueError(f"word list {path} has no terms")
    return terms


class BadWordsTagger(Tagger):
    """Occurrences of listed terms, whole words, case-insensitive (``badwords__*``).

    A term matches where it starts and ends on an ASCII word boundary (``class`` does not
    contain ``ass``; ``ass.`` does); the words of a multi-word term may be separated by spaces
    or tabs, not by a line break. At one position the longest term wins, and matches do not
    overlap.

    Columns: ``count`` (matches), ``fraction_of_words`` (matches / whitespace-separated
    words, 0 for a text without words) and ``spans`` (SPAN of each match).
    """

    name = "badwords"

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_BADWORDS) -> None:
        terms = sorted(set(load_terms(path)), key=lambda t: (-len(t), t))
        alternation = "|".join("[ \\t]+".join(map(re.escape, t.split())) for t in terms)
        self.pattern = re.compile(rf"\b(?:{alternation})\b", re.ASCII | re.IGNORECASE)
        # Rust's Unicode case folding finds a superset of Python's ASCII folding, so the
        # lines this keeps include every match, and Python has the last word.
        self._line_filter = rf"(?i)(?-u:\b)(?:{alternation})(?-u:\b)"

    def tag(self, docs: pl.DataFrame) -> pl.DataFrame:
        texts = docs["text"].fill_null("")
        spans: list[list[dict[str, int]]] = [[] for _ in range(len(texts))]
        for _, row, offset, line in matching_lines(texts, {"badwords": self._line_filter}):
            spans[row].extend(
                {"start": offset + m.start(), "end": offset + m.end()}
                for m in self.pattern.finditer(line)
            )
        span_column = pl.Series(spans, dtype=SPAN)
        count = span_column.list.len().cast(pl.Int64)
        # A text with a match has a word, so the clip only turns 0 / 0 into 0.
        words = texts.str.count_matches(r"[^\s\x1c-\x1f]+").clip(lower_bound=1)
        return docs.select("id").with_columns(
            **{
                attribute(self.name, "count"): count,
                attribute(self.name, "fraction_of_words"): (count / words).cast(pl.Float64),
                attribute(self.name, "spans"): span_column,
            }
        )
