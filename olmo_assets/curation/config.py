"""A curation run's configuration (a "mix"): sources, taggers, rules, dedup, sampling.

Rules are DuckDB SQL boolean expressions over the attribute columns (``{tagger}__{attr}``)
that say when a document is *removed*; each belongs to a stage, and a removed document is
charged to the first stage (in :data:`STAGES` order) whose rule fires, with the rule's name
as the reason. Thresholds therefore change without recomputing any tagger.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, get_args

from olmo_nn.config import Config, ConfigError
from olmo_nn.paths import safe_name

__all__ = [
    "CLASSIFIER_LEVELS",
    "MINHASH_METHODS",
    "STAGES",
    "CurationConfig",
    "DedupConfig",
    "FastTextClassifierConfig",
    "RuleConfig",
    "SourceConfig",
    "SpanReplacementConfig",
]

#: Dolma's web pipeline order: a document removed by several rules is charged to the first.
STAGES = (
    "extraction",
    "language",
    "url_dedup",
    "exact_dedup",
    "quality",
    "content",
    "fuzzy_dedup",
    "paragraph_dedup",
    "decontamination",
    "spans",
    "sampling",
)

MinHashMethod = Literal["online", "clusters"]
#: ``dedup.minhash_method`` values: single-pass band filters, or two-pass union-find clusters.
MINHASH_METHODS: tuple[str, ...] = get_args(MinHashMethod)
ClassifierLevel = Literal["document", "sentence"]
#: Where a fastText classifier is applied: the whole document, or each sentence.
CLASSIFIER_LEVELS: tuple[str, ...] = get_args(ClassifierLevel)
_TAGGER_NAME = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")


@dataclass(kw_only=True)
class RuleConfig(Config):
    """One removal rule."""

    name: str
    """The reason recorded for documents it removes (e.g. ``gopher_word_count``)."""
    stage: str = "quality"
    """One of :data:`STAGES`."""
    remove_if: str
    """DuckDB SQL boolean expression over attribute columns; true means remove."""

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(
                f"rule {self.name!r}: stage={self.stage!r} is not one of {', '.join(STAGES)}"
            )
        if not self.remove_if.strip():
            raise ConfigError(f"rule {self.name!r}: remove_if is empty")


@dataclass(kw_only=True)
class SpanReplacementConfig(Config):
    """Replace character spans of kept documents (drop C4-failing lines, mask PII)."""

    attribute: str
    """A SPAN attribute column, e.g. ``c4__drop_spans`` or ``pii__email_spans``."""
    replacement: str = ""
    """Text put in place of each span (``" |||EMAIL_ADDRESS||| "`` masks an email)."""
    max_spans: int | None = None
    """Apply only when the document has at most this many spans (PII: 5; more is a rule)."""


@dataclass(kw_only=True)
class SourceConfig(Config):
    """One source: its files and what happens to its documents."""

    name: str
    """Source name (output folders are named after it): letters, digits, ``_`` and ``-``."""
    paths: list[str]
    """Files, folders (recursive) or globs of Dolma documents (jsonl, jsonl.gz, jsonl.zst, parquet)."""
    taggers: list[str] | None = None
    """Taggers to run (default: the mix's ``taggers``)."""
    rules: list[RuleConfig] | None = None
    """Removal rules (default: the mix's ``rules``)."""
    span_replacements: list[SpanReplacementConfig] | None = None
    """Span replacements for kept documents (default: the mix's)."""
    sample_rate: float = 1.0
    """Fraction of kept documents to keep (< 1) or copies to make (> 1), seeded by document id."""
    validation_fraction: float = 0.0
    """Fraction of kept documents held out as this source's validation split."""
    code: bool = False
    """A code source: exempt from decontamination (as Paloma does)."""
    html: bool = False
    """The documents' ``text`` is HTML: extract the main text first (trafilatura); pages with
    nothing extractable are removed at the ``extraction`` stage."""
    outputs_by_folder: bool = False
    """Keep the documents of each input folder together: the mix writes
    ``documents/<source>/<folder>/`` and ``validation/<source>/<folder>/``, named after the
    folder each input file is in (a source read shard by shard keeps its shards apart, so
    each can be tokenized on its own)."""

    def __post_init__(self) -> None:
        try:
            safe_name("source", self.name)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if not self.paths:
            raise ConfigError(f"source {self.name!r}: paths is empty")
        if self.sample_rate < 0:
            raise ConfigError(f"source {self.name!r}: sample_rate={self.sample_rate} must be >= 0")
        if not 0 <= self.validation_fraction < 1:
            raise ConfigError(f"source {self.name!r}: validation_fraction must be in [0, 1)")


@dataclass(kw_only=True)
class DedupConfig(Config):
    """Deduplication across all sources, first copy (in source, file, line order) kept."""

    url: bool = True
    """Flag documents whose metadata URL appeared before."""
    exact: bool = True
    """Flag documents whose full text appeared before."""
    paragraphs: bool = True
    """Flag paragraphs that appeared before (removed by span replacement)."""
    minhash: bool = False
    """Fuzzy near-duplicates with MinHash/LSH (5-word shingles, 14 bands x 8 rows)."""
    minhash_method: MinHashMethod = "online"
    """How ``minhash`` decides: ``online`` (one pass: a document is a near-duplicate when one
    of its LSH bands was seen in an earlier document, bands kept in Bloom filters) or
    ``clusters`` (two passes: documents sharing a band are joined transitively into clusters
    with union-find, exact band matches, and every document but a cluster's first is a
    near-duplicate; signatures, 448 bytes per document, are spilled to disk)."""
    false_positive_rate: float = 1e-5
    """Bloom filters' target false-positive rate (at the expected capacity)."""
    expected_documents: int = 1_000_000
    """Documents the run will see: sizes the URL and text filters."""
    expected_paragraphs: int = 20_000_000
    """Non-blank paragraphs the run will see: sizes the paragraph filter."""

    def __post_init__(self) -> None:
        if self.minhash_method not in MINHASH_METHODS:
            raise ConfigError(
                f"dedup.minhash_method={self.minhash_method!r} is not one of "
                f"{', '.join(MINHASH_METHODS)}"
            )


@dataclass(kw_only=True)
class FastTextClassifierConfig(Config):
    """A fastText classifier from a local model file, run as a tagger named ``name``.

    Its attributes are ``{name}__score`` (``level: document``) or ``{name}__sentence_spans``,
    ``{name}__sentence_scores`` and ``{name}__max_score`` (``level: sentence``): the
    probability of ``positive_label``. Removing documents is a rule's job
    (``remove_if: jigsaw_hatespeech__max_score >= 0.4``).
    """

    name: str
    """The tagger's name: list it in ``taggers``; it prefixes the attribute columns
    (lowercase letters, digits and single underscores, starting with a letter)."""
    model: str
    """Path of the model file (fastText ``.bin`` or ``.ftz``); nothing is downloaded."""
    positive_label: str
    """The label whose probability is the score, with or without ``__label__`` (Dolma's
    Jigsaw models: ``toxic`` / ``nsfw``)."""
    level: ClassifierLevel = "sentence"
    """``document`` (the whole text, newlines as spaces) or ``sentence`` (each sentence)."""

    def __post_init__(self) -> None:
        where = f"fasttext_classifiers: {self.name!r}"
        if not _TAGGER_NAME.fullmatch(self.name):
            raise ConfigError(
                f"{where}: name must be lowercase letters, digits and single underscores, "
                "starting with a letter (it prefixes attribute columns)"
            )
        if not self.model.strip():
            raise ConfigError(f"{where}: model is empty; give the model file's path")
        if not self.positive_label.removeprefix("__label__"):
            raise ConfigError(f"{where}: positive_label is empty")
        if self.level not in CLASSIFIER_LEVELS:
            raise ConfigError(
                f"{where}: level={self.level!r} is not one of {', '.join(CLASSIFIER_LEVELS)}"
            )


@dataclass(kw_only=True)
class CurationConfig(Config):
    """A whole curation run."""

    sources: list[SourceConfig]
    """Sources, processed in this order (which fixes which duplicate is the first)."""
    taggers: list[str] = field(default_factory=lambda: ["language", "gopher", "c4", "pii"])
    """Default taggers for every source: built-in names or ``fasttext_classifiers`` names."""
    fasttext_classifiers: list[FastTextClassifierConfig] = field(default_factory=list)
    """fastText classifiers (local model files) that ``taggers`` can name."""
    rules: list[RuleConfig] = field(default_factory=list)
    """Default removal rules for every source."""
    span_replacements: list[SpanReplacementConfig] = field(default_factory=list)
    """Default span replacements for every source."""
    dedup: DedupConfig = field(default_factory=DedupConfig)
    """Deduplication settings."""
    decontamination_paths: list[str] = field(default_factory=list)
    """Evaluation texts (jsonl with ``text``) whose >= 13-token paragraphs mark contamination."""
    max_document_bytes: int = 10_000_000
    """Documents larger than this are quarantined."""
    batch_size: int = 2000
    """Documents per batch (bounded memory)."""
    workers: int = 0
    """Tagging processes (0: one per core)."""
    seed: int = 0
    """Seed of sampling and validation splits."""
    tokenize: bool = False
    """Also tokenize the kept documents into ``shards/`` and the validation splits into
    ``validation_shards/`` (OLMo token shards, see ``olmo data tokenize``)."""
    tokenizer: str | None = None
    """Tokenizer name or path for ``tokenize`` (default: OLMo's)."""

    def __post_init__(self) -> None:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"source names must be unique, got {names}")
        classifiers = [c.name for c in self.fasttext_classifiers]
        if len(set(classifiers)) != len(classifiers):
            raise ConfigError(f"fasttext_classifiers names must be unique, got {classifiers}")
        if self.max_document_bytes <= 0 or self.batch_size <= 0:
            raise ConfigError("max_document_bytes and batch_size must be positive")
        if self.workers < 0:
            raise ConfigError(f"workers={self.workers} must be at least 0 (0: one per core)")
