"""The curation chain: read → quarantine → tag → dedup → decontaminate → mix → write.

One streaming pass per source, in config order. Batches of raw records are parsed and tagged
in worker processes (taggers are stateless); the main process then applies the stateful,
order-dependent steps (duplicate ids, deduplication, decontamination) in input order, so the
first copy of anything is the same whatever the number of workers, and writes the outputs.

Accounting: every input record ends in exactly one of kept (``documents/``), validation
(``validation/``), removed (``removed/``: id, source, stage, reason) or quarantined
(``quarantine/``: file, line, error, raw bytes). ``report.json`` holds the counts per source
and stage and checks the identity.

With ``dedup.minhash_method: clusters`` near-duplicates are known only once every document
has been seen: the documents and attributes of each batch wait in a scratch folder beside the
output, and the mix runs over them, in the same order, after the clustering.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from tqdm import tqdm

from olmo_assets.curation.bloom import BloomFilter, hash_strings
from olmo_assets.curation.config import (
    CurationConfig,
    FastTextClassifierConfig,
    RuleConfig,
    SourceConfig,
)
from olmo_assets.curation.mixer import apply_spans, decide, sample_copies, validation_mask
from olmo_assets.curation.outputs import JsonlWriter, ParquetWriter
from olmo_assets.curation.taggers.base import Tagger
from olmo_nn.atomic import scratch_folder, staged_folder
from olmo_nn.data.documents import (
    Document,
    RawRecord,
    ReadError,
    iter_record_batches,
    parse_record,
    resolve_inputs,
)
from olmo_nn.data.workers import process_pool
from olmo_nn.paths import safe_name

__all__ = ["TAGGERS", "CurationSummary", "build_tagger", "curate"]

#: Tagger names usable in configs, and where their classes live.
TAGGERS = {
    "length": "olmo_assets.curation.taggers.length:LengthTagger",
    "gopher": "olmo_assets.curation.taggers.gopher:GopherTagger",
    "c4": "olmo_assets.curation.taggers.c4:C4Tagger",
    "repetition": "olmo_assets.curation.taggers.repetition:RepetitionTagger",
    "pii": "olmo_assets.curation.taggers.pii:PiiTagger",
    "language": "olmo_assets.curation.taggers.language:LanguageTagger",
    # Same ``language__*`` columns plus per-paragraph spans and languages (slower).
    "language_paragraphs": "olmo_assets.curation.taggers.language:paragraph_language_tagger",
    "badwords": "olmo_assets.curation.taggers.toxicity:BadWordsTagger",
    "code": "olmo_assets.curation.taggers.code:CodeTagger",
}
#: Attribute prefixes of the pipeline's own columns: no tagger may take these names.
_RESERVED_NAMES = ("dedup", "minhash", "decontam", "html")
_MAX_BATCH_BYTES = 16 << 20
#: With several workers a batch is tagged as pieces of about this much JSON, so the processes
#: share it evenly (a batch is cut by documents or bytes, and a few large documents can make
#: one batch most of a run). The pieces' results are joined back into the batch, so what is
#: written (row groups included) does not depend on the pieces.
_TASK_BYTES = 2 << 20
#: Added to HTML sources' rules: pages the extractor found no text in.
_NO_TEXT = RuleConfig(
    name="no_extractable_text", stage="extraction", remove_if="html__no_extractable_text"
)
#: Added to every source's rules when fuzzy dedup is on.
_NEAR_DUPLICATE = RuleConfig(
    name="near_duplicate", stage="fuzzy_dedup", remove_if="minhash__is_duplicate"
)
#: Added to every non-code source's rules when evaluation data is given (Paloma's rule).
_CONTAMINATED = RuleConfig(
    name="contaminated", stage="decontamination", remove_if="decontam__is_contaminated"
)


#: The stages a run can do; ``olmo data curate`` does all of them in one pass.
STAGE_NAMES = ("tag", "dedup", "mix")


def _without_stateful(config: CurationConfig) -> CurationConfig:
    """The config with dedup and decontamination off (for tag- and mix-only runs)."""
    dedup = config.dedup.replace(url=False, exact=False, paragraphs=False, minhash=False)
    return config.replace(dedup=dedup, decontamination_paths=[])


def build_tagger(name: str, classifiers: Sequence[FastTextClassifierConfig] = ()) -> Tagger:
    """The tagger a config names: one of ``classifiers`` (a config's ``fasttext_classifiers``)
    or a built-in one of :data:`TAGGERS` (built with its defaults)."""
    for classifier in classifiers:
        if classifier.name == name:
            from olmo_assets.curation.taggers.toxicity import FastTextClassifierTagger

            return FastTextClassifierTagger(
                classifier.model,
                name=classifier.name,
                positive_label=classifier.positive_label,
                level=classifier.level,
            )
    if name not in TAGGERS:
        available = [*TAGGERS, *(c.name for c in classifiers)]
        raise ValueError(f"unknown tagger {name!r}; available: {', '.join(available)}")
    module, _, cls = TAGGERS[name].partition(":")
    tagger: Tagger = getattr(importlib.import_module(module), cls)()
    return tagger


def _source_taggers(config: CurationConfig, source: SourceConfig) -> list[str]:
    return list(source.taggers if source.taggers is not None else config.taggers)


def _check_taggers(config: CurationConfig) -> None:
    """Fail before reading anything: unknown tagger names, clashing or unusable classifiers."""
    from olmo_assets.curation.taggers.toxicity import check_classifier_model

    classifiers = {c.name: c for c in config.fasttext_classifiers}
    for name in classifiers:
        if name in TAGGERS or name in _RESERVED_NAMES:
            raise ValueError(
                f"fasttext_classifiers: {name!r} is the name of a built-in tagger or of the "
                f"pipeline's own attributes ({', '.join([*TAGGERS, *_RESERVED_NAMES])}); "
                "pick another name"
            )
    used: list[str] = []
    for source in config.sources:
        for name in _source_taggers(config, source):
            if name not in TAGGERS and name not in classifiers:
                known = ", ".join(TAGGERS)
                declared = ", ".join(classifiers) or "none"
                raise ValueError(
                    f"source {source.name!r}: unknown tagger {name!r}; built-in taggers are "
                    f"{known}; fasttext_classifiers in this config: {declared}"
                )
            if name in classifiers and name not in used:
                used.append(name)
    for name in used:
        classifier = classifiers[name]
        try:
            check_classifier_model(classifier.model, classifier.positive_label)
        except (FileNotFoundError, ValueError) as error:
            raise type(error)(f"fasttext_classifiers: {name!r}: {error}") from None


def _classifiers_for(config: CurationConfig, taggers: list[str]) -> list[FastTextClassifierConfig]:
    return [c for c in config.fasttext_classifiers if c.name in taggers]


@dataclass
class SourceCounts:
    """What became of one source's input records."""

    input_records: int = 0
    input_bytes: int = 0
    kept: int = 0
    kept_bytes: int = 0
    validation: int = 0
    passed: int = 0
    """Documents that went through a tag- or dedup-only run (no mixing) unquarantined."""
    output_documents: int = 0
    removed: Counter[str] = field(default_factory=Counter)
    removed_reasons: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        removed = sum(self.removed.values())
        quarantined = sum(self.quarantined.values())
        return {
            "input_records": self.input_records,
            "input_bytes": self.input_bytes,
            "kept": self.kept,
            "kept_bytes": self.kept_bytes,
            "validation": self.validation,
            "removed": removed,
            "removed_by_stage": dict(sorted(self.removed.items())),
            "removed_by_reason": dict(sorted(self.removed_reasons.items())),
            "quarantined": quarantined,
            "quarantined_by_reason": dict(sorted(self.quarantined.items())),
            "passed": self.passed,
            "output_documents": self.output_documents,
            "accounting_ok": self.input_records
            == self.kept + self.validation + removed + quarantined + self.passed,
        }


@dataclass
class CurationSummary:
    output: Path
    sources: dict[str, SourceCounts]
    seconds: float
    dedup_state: dict[str, Any] | None = None
    """The manifest of the dedup state the run saved (``curate(dedup_state=...)``)."""

    def to_dict(self) -> dict[str, Any]:
        per_source = {name: counts.to_dict() for name, counts in self.sources.items()}
        return {
            "sources": per_source,
            "total_input_bytes": sum(c.input_bytes for c in self.sources.values()),
            "accounting_ok": all(c["accounting_ok"] for c in per_source.values()),
        }


def quarantine_category(error: str) -> str:
    """An error message without its specifics ("invalid UTF-8 at byte 28" -> "invalid UTF-8")."""
    return re.split(r" at byte| \(|: |, got|; expected| '[^']*' in source", error, maxsplit=1)[0]


# --------------------------------------------------------------------------- workers
_WORKER_TAGGERS: dict[tuple[str, str], Tagger] = {}


def _quarantine_row(source: str, error: ReadError, raw: bytes | None) -> dict[str, Any]:
    return {
        "source": source,
        "file": error.path,
        "line": error.line,
        "error": error.reason,
        "raw": raw,
    }


def _raw_bytes(record: RawRecord) -> bytes:
    payload = record.payload
    return payload if isinstance(payload, bytes) else json.dumps(payload, default=str).encode()


def _tag_batch(
    source: str,
    records: list[RawRecord | ReadError],
    tagger_names: list[str],
    max_bytes: int,
    html: bool = False,
    classifiers: Sequence[FastTextClassifierConfig] = (),
) -> tuple[pl.DataFrame, pl.DataFrame, list[dict[str, Any]]]:
    """Parse and tag one batch (runs in a worker process)."""
    documents: list[Document] = []
    quarantine: list[dict[str, Any]] = []
    for record in records:
        if isinstance(record, ReadError):  # a whole file was unreadable
            quarantine.append(_quarantine_row(source, record, None))
            continue
        parsed = parse_record(record, default_source=source)
        if isinstance(parsed, ReadError):
            quarantine.append(_quarantine_row(source, parsed, _raw_bytes(record)))
        elif len(parsed.text.encode("utf-8")) > max_bytes:
            error = ReadError(
                record.path, record.line, f"document larger than max_document_bytes={max_bytes}"
            )
            quarantine.append(_quarantine_row(source, error, _raw_bytes(record)))
        else:
            documents.append(parsed)
    docs = pl.DataFrame(
        {
            "id": [d.id for d in documents],
            "text": [d.text for d in documents],
            "source": [source] * len(documents),
            "added": [d.added for d in documents],
            "created": [d.created for d in documents],
            "metadata": [json.dumps(d.metadata, sort_keys=True) if d.metadata is not None else None for d in documents],
            "file": [d.path for d in documents],
            "line": [d.line for d in documents],
        },
        schema={"id": pl.String, "text": pl.String, "source": pl.String, "added": pl.String,
                "created": pl.String, "metadata": pl.String, "file": pl.String, "line": pl.Int64},
    )  # fmt: skip
    attributes = docs.select("id")
    if html:
        from olmo_assets.curation.html import extract_batch

        urls = [json.loads(m).get("url") if m else None for m in docs["metadata"].to_list()]
        extracted = extract_batch(docs["text"].to_list(), urls)
        attributes = attributes.with_columns(
            pl.Series("html__no_extractable_text", [text is None for text in extracted])
        )
        docs = docs.with_columns(pl.Series("text", [text or "" for text in extracted]))
    for name in tagger_names:
        # Keyed by the classifier's settings too: one process may run several configs.
        spec = next((c for c in classifiers if c.name == name), None)
        key = (name, "" if spec is None else json.dumps(spec.to_dict(), sort_keys=True))
        tagger = _WORKER_TAGGERS.get(key)
        if tagger is None:
            tagger = _WORKER_TAGGERS[key] = build_tagger(name, classifiers)
        tagged = tagger.tag(docs)
        attributes = attributes.hstack(tagged.drop("id"))
    return docs, attributes, quarantine


# --------------------------------------------------------------------------- reading
# --------------------------------------------------------------------------- main loop
class _Writers:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._open: dict[tuple[str, ...], JsonlWriter | ParquetWriter] = {}
        # Per ``(kind, source)`` written folder by folder: the folder written last.
        self._current: dict[tuple[str, ...], tuple[str, ...]] = {}

    def jsonl(self, *parts: str) -> JsonlWriter:
        writer = self._open.get(parts)
        if writer is None:
            writer = self._open[parts] = JsonlWriter(self.root.joinpath(*parts))
        assert isinstance(writer, JsonlWriter)
        if len(parts) > 2:
            # A source written folder by folder (outputs_by_folder) keeps one folder's file
            # open, not one per folder to the end: the previous folder's file is closed (a
            # folder written again later starts its next part file).
            previous = self._current.get(parts[:2])
            if previous is not None and previous != parts:
                self._open[previous].close()
            self._current[parts[:2]] = parts
        return writer

    def parquet(self, *parts: str) -> ParquetWriter:
        writer = self._open.get(parts)
        if writer is None:
            writer = self._open[parts] = ParquetWriter(self.root.joinpath(*parts))
        assert isinstance(writer, ParquetWriter)
        return writer

    def close(self) -> None:
        for writer in self._open.values():
            writer.close()


def _document_record(row: dict[str, Any], text: str, doc_id: str) -> dict[str, Any]:
    record: dict[str, Any] = {"id": doc_id, "text": text, "source": row["source"]}
    for key in ("added", "created"):
        if row.get(key) is not None:
            record[key] = row[key]
    if row.get("metadata") is not None:
        record["metadata"] = json.loads(row["metadata"])
    return record


class _AttributeReader:
    """Rows of earlier runs' ``attributes/<tagger>/<source>/`` parquet files, in order: one
    tagger's folders of one source, one after the other (a source tagged shard by shard)."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders
        paths = [path for folder in folders for path in sorted(folder.glob("*.parquet"))]
        self._frames = iter(pl.read_parquet(path) for path in paths)
        self._buffer = pl.DataFrame()

    def take(self, ids: pl.Series) -> pl.DataFrame:
        while self._buffer.height < len(ids):
            frame = next(self._frames, None)
            if frame is None:
                break
            self._buffer = frame if self._buffer.width == 0 else pl.concat([self._buffer, frame])
        rows, self._buffer = self._buffer.head(len(ids)), self._buffer.slice(len(ids))
        if rows.height != len(ids) or not rows["id"].equals(ids.rename("id")):
            raise ValueError(
                f"the attributes in {self.folders[0].parent} do not line up with the documents "
                "read now (other inputs or config, or a shard added since they were made?); "
                "rerun the tags and dedup on these sources (`olmo data tag` / `olmo data dedup`, "
                "or in the lab the attributes and deduplicated assets)"
            )
        return rows.drop("id")


class _Curator:
    def __init__(
        self,
        config: CurationConfig,
        root: Path,
        *,
        stages: frozenset[str] = frozenset(STAGE_NAMES),
        attributes_from: list[Path] | None = None,
        dedup_state: Path | None = None,
        scratch: Path | None = None,
    ) -> None:
        self.config = config
        self.stages = stages
        self.attributes_from = attributes_from or []
        self._readers: dict[str, list[_AttributeReader]] = {}
        self.writers = _Writers(root)
        # Ids seen so far, in a Bloom filter so memory stays bounded whatever the corpus size.
        # A false positive (rate 1e-9 at capacity) quarantines a document as a duplicate id:
        # counted and reported, never silent.
        self.seen_ids = BloomFilter(
            expected_items=config.dedup.expected_documents, false_positive_rate=1e-9
        )
        from olmo_assets.curation.stateful import StatefulTaggers

        self.stateful = StatefulTaggers(
            config if "dedup" in stages else _without_stateful(config),
            state=dedup_state,
            scratch=scratch,
        )
        self.scratch = scratch
        # With the clusters method: (source, rows) of each batch fed to the stateful taggers,
        # and the batches whose mix waits for the clustering (source, docs and attributes).
        self._batches: list[tuple[str, int]] = []
        self._pending: list[tuple[SourceConfig, Path, Path]] = []

    def _loaded_attributes(self, source: str, ids: pl.Series) -> list[pl.DataFrame]:
        if source not in self._readers:
            # A tagger's folders of this source across the roots, in the roots' order.
            by_tagger: dict[str, list[Path]] = {}
            for root in self.attributes_from:
                for folder in sorted((root / "attributes").glob(f"*/{source}")):
                    # Main-text extraction (html__*) is redone by every run of an HTML source
                    # (tag, dedup and this one alike): its own columns, never loaded.
                    if folder.parent.name != "html":
                        by_tagger.setdefault(folder.parent.name, []).append(folder)
            self._readers[source] = [_AttributeReader(f) for f in by_tagger.values()]
        return [reader.take(ids) for reader in self._readers[source]]

    def process(
        self, source: SourceConfig, docs: pl.DataFrame, attributes: pl.DataFrame,
        quarantine: list[dict[str, Any]], counts: SourceCounts,
    ) -> None:  # fmt: skip
        # Duplicate ids (within the run) are quarantined: a later copy cannot be told apart.
        keys = hash_strings(f"{source.name}\0{doc_id}" for doc_id in docs["id"].to_list())
        duplicate = self.seen_ids.add_and_check(keys)
        if duplicate.any():
            for row in docs.filter(pl.Series(duplicate)).iter_rows(named=True):
                error = ReadError(
                    row["file"],
                    row["line"],
                    f"duplicate id {row['id']!r} in source {source.name!r}",
                )
                raw = json.dumps({"id": row["id"], "text": row["text"]}).encode()
                quarantine.append(_quarantine_row(source.name, error, raw))
            keep = pl.Series(~duplicate)
            docs, attributes = docs.filter(keep), attributes.filter(keep)
        for row in quarantine:
            counts.quarantined[quarantine_category(str(row["error"]))] += 1
        if quarantine:
            frame = pl.DataFrame(quarantine, schema={"source": pl.String, "file": pl.String, "line": pl.Int64,
                                                     "error": pl.String, "raw": pl.Binary})  # fmt: skip
            self.writers.parquet("quarantine", source.name).write(frame)
        if docs.height == 0:
            return
        counts.input_bytes += int(docs["text"].str.len_bytes().sum())
        attributes = attributes.hstack(self.stateful.tag(docs).drop("id"))
        for tagger_name in sorted({c.split("__", 1)[0] for c in attributes.columns if "__" in c}):
            columns = ["id", *(c for c in attributes.columns if c.startswith(f"{tagger_name}__"))]
            self.writers.parquet("attributes", tagger_name, source.name).write(
                attributes.select(columns)
            )
        for loaded in self._loaded_attributes(source.name, docs["id"]):
            attributes = attributes.hstack(loaded)
        if self.stateful.deferred:
            self._batches.append((source.name, docs.height))
        if "mix" not in self.stages:
            counts.passed += docs.height
            return
        if self.stateful.deferred:
            assert self.scratch is not None
            index = len(self._pending)
            docs_path = self.scratch / f"batch-{index:07d}-documents.parquet"
            attributes_path = self.scratch / f"batch-{index:07d}-attributes.parquet"
            docs.write_parquet(docs_path)
            attributes.write_parquet(attributes_path)
            self._pending.append((source, docs_path, attributes_path))
            return
        self._mix(source, docs, attributes, counts)

    def finish(self, counts: dict[str, SourceCounts]) -> None:
        """After the last batch: the clusters method's near-duplicates, then the waiting mix."""
        minhash = self.stateful.finish()
        if minhash is None:
            return
        offset = 0
        slices = []
        for source_name, height in self._batches:
            piece = minhash.slice(offset, height)
            offset += height
            self.writers.parquet("attributes", "minhash", source_name).write(piece)
            slices.append(piece)
        if "mix" not in self.stages:
            return
        for (source, docs_path, attributes_path), piece in zip(self._pending, slices, strict=True):
            docs = pl.read_parquet(docs_path)
            attributes = pl.read_parquet(attributes_path).hstack(piece.drop("id"))
            docs_path.unlink()
            attributes_path.unlink()
            self._mix(source, docs, attributes, counts[source.name])

    def _mix(
        self, source: SourceConfig, docs: pl.DataFrame, attributes: pl.DataFrame,
        counts: SourceCounts,
    ) -> None:  # fmt: skip
        """Decide, replace spans, sample, and write one batch's documents."""
        config = self.config
        rules = list(source.rules if source.rules is not None else config.rules)
        if "html__no_extractable_text" in attributes.columns:
            rules.append(_NO_TEXT)
        if "decontam__is_contaminated" in attributes.columns and not source.code:
            rules.append(_CONTAMINATED)
        if "minhash__is_duplicate" in attributes.columns:
            rules.append(_NEAR_DUPLICATE)
        decisions = decide(attributes, rules)
        replacements = (
            source.span_replacements
            if source.span_replacements is not None
            else config.span_replacements
        )
        span_columns = [
            (attributes[r.attribute].to_list(), r)
            for r in replacements
            if r.attribute in attributes.columns
        ]
        ids = docs["id"].to_list()
        validation = validation_mask(
            ids, source=source.name, fraction=source.validation_fraction, seed=config.seed
        )
        copies = sample_copies(ids, source=source.name, rate=source.sample_rate, seed=config.seed)
        removed_rows: list[dict[str, Any]] = []
        kept_records: list[tuple[str, dict[str, Any]]] = []
        validation_records: list[tuple[str, dict[str, Any]]] = []
        for i, row in enumerate(docs.iter_rows(named=True)):
            stage, reason = decisions.stage[i], decisions.reason[i]
            text = row["text"]
            if stage is None and span_columns:
                text = apply_spans(text, [(column[i], r) for column, r in span_columns])
                if not text.strip():
                    stage, reason = "spans", "empty_after_span_replacement"
            if stage is None and not validation[i] and copies[i] == 0:
                stage, reason = "sampling", "downsampled"
            if stage is not None:
                counts.removed[stage] += 1
                counts.removed_reasons[f"{stage}/{reason}"] += 1
                removed_rows.append(
                    {"id": row["id"], "source": source.name, "stage": stage, "reason": reason}
                )
            elif validation[i]:
                counts.validation += 1
                validation_records.append((row["file"], _document_record(row, text, row["id"])))
            else:
                counts.kept += 1
                counts.kept_bytes += len(text.encode("utf-8"))
                for copy in range(int(copies[i])):
                    doc_id = row["id"] if copy == 0 else f"{row['id']}#{copy}"
                    kept_records.append((row["file"], _document_record(row, text, doc_id)))
        counts.output_documents += len(kept_records)
        for folder, records in (("documents", kept_records), ("validation", validation_records)):
            for parts, group in _grouped(source, records):
                self.writers.jsonl(folder, source.name, *parts).write(group)
        if removed_rows:
            self.writers.parquet("removed", source.name).write(
                pl.DataFrame(removed_rows, schema={"id": pl.String, "source": pl.String, "stage": pl.String, "reason": pl.String})
            )  # fmt: skip


def _grouped(
    source: SourceConfig, records: list[tuple[str, dict[str, Any]]]
) -> Iterator[tuple[tuple[str, ...], list[dict[str, Any]]]]:
    """A batch's records (each with the file it was read from) by the folder they are written
    to under ``<kind>/<source>/``: all together, or (``outputs_by_folder``) per input folder,
    in the order the folders first appear."""
    if not source.outputs_by_folder:
        if records:
            yield (), [record for _, record in records]
        return
    groups: dict[str, list[dict[str, Any]]] = {}
    for file, record in records:
        groups.setdefault(Path(file).parent.name, []).append(record)
    for folder, group in groups.items():
        yield (safe_name("input folder", folder),), group


def _import_taggers(names: Sequence[str]) -> None:
    """Import the built-in taggers' modules (in a worker, while the main process reads)."""
    for name in names:
        if name in TAGGERS:
            importlib.import_module(TAGGERS[name].partition(":")[0])


def _executor(workers: int, taggers: Sequence[str] = ()) -> Executor | None:
    if workers <= 1:
        return None
    # Spawned, not forked: Polars' thread pool deadlocks in a forked child.
    executor = process_pool(workers, "spawn")
    # Start every worker now (a spawned pool starts them one task at a time), so their
    # imports overlap the main process reading the first batch.
    for _ in range(workers):
        executor.submit(_import_taggers, list(taggers))
    return executor


def _tokenize_outputs(root: Path, config: CurationConfig) -> dict[str, Any]:
    """Token shards of the kept documents and of the validation splits; tokens per source."""
    from olmo_nn.data import tokenize_documents

    tokens: dict[str, Any] = {}
    for folder, shards in (("documents", "shards"), ("validation", "validation_shards")):
        if not (root / folder).is_dir() or not any((root / folder).rglob("*.jsonl.gz")):
            continue
        summary = tokenize_documents([root / folder], root / shards, tokenizer=config.tokenizer)
        tokens[shards] = {name: s["num_tokens"] for name, s in sorted(summary.sources.items())}
    return tokens


def _pieces(
    batch: list[RawRecord | ReadError], max_bytes: int
) -> Iterator[list[RawRecord | ReadError]]:
    """Consecutive pieces of ``batch`` of about ``max_bytes`` of raw records each."""
    piece: list[RawRecord | ReadError] = []
    size = 0
    for record in batch:
        piece.append(record)
        if isinstance(record, RawRecord) and isinstance(record.payload, bytes):
            size += len(record.payload)
        if size >= max_bytes:
            yield piece
            piece, size = [], 0
    if piece:
        yield piece


def _joined(
    results: list[tuple[pl.DataFrame, pl.DataFrame, list[dict[str, Any]]]],
) -> tuple[pl.DataFrame, pl.DataFrame, list[dict[str, Any]]]:
    """The results of a batch's pieces (in order) as the result of the whole batch."""
    if len(results) == 1:
        return results[0]
    # A piece whose records were all quarantined has no rows (and may lack dtypes).
    tagged = [(docs, attributes) for docs, attributes, _ in results if docs.height] or [
        results[0][:2]
    ]
    docs = pl.concat([docs for docs, _ in tagged], how="vertical_relaxed", rechunk=True)
    attributes = pl.concat(
        [attributes for _, attributes in tagged], how="vertical_relaxed", rechunk=True
    )
    quarantine = [row for _, _, rows in results for row in rows]
    return docs, attributes, quarantine


def _run_source(
    curator: _Curator,
    executor: Executor | None,
    source: SourceConfig,
    counts: SourceCounts,
    workers: int,
    bar: tqdm[Any],
) -> None:
    """Stream one source: batches tagged (in workers) ahead, processed in input order."""
    config = curator.config
    taggers = _source_taggers(config, source)
    classifiers = _classifiers_for(config, taggers)
    pending: deque[list[Future[Any]] | tuple[Any, ...]] = deque()

    def drain(limit: int) -> None:
        while len(pending) > limit:
            item = pending.popleft()
            if isinstance(item, list):
                docs, attributes, quarantine = _joined([future.result() for future in item])
            else:
                docs, attributes, quarantine = item
            curator.process(source, docs, attributes, quarantine, counts)
            bar.update(docs.height + len(quarantine))

    files = resolve_inputs(source.paths)
    for batch in iter_record_batches(files, config.batch_size, _MAX_BATCH_BYTES):
        counts.input_records += len(batch)
        settings = (taggers, config.max_document_bytes, source.html, classifiers)
        if executor is None:
            pending.append(_tag_batch(source.name, batch, *settings))
        else:
            pending.append(
                [
                    executor.submit(_tag_batch, source.name, piece, *settings)
                    for piece in _pieces(batch, _TASK_BYTES)
                ]
            )
        drain(2 * workers)
    drain(0)


def curate(
    config: CurationConfig,
    output: str | os.PathLike[str],
    *,
    progress: bool = False,
    stages: tuple[str, ...] = STAGE_NAMES,
    attributes_from: list[str | os.PathLike[str]] | None = None,
    dedup_state: str | os.PathLike[str] | None = None,
) -> CurationSummary:
    """Run the chain into ``output`` (written atomically) and write ``report.json``.

    ``stages`` picks what this run does: ``tag`` (the taggers), ``dedup`` (deduplication and
    decontamination) and ``mix`` (decisions and outputs); ``attributes_from`` names earlier
    runs' output folders whose ``attributes/`` are joined in (they must have read the same
    inputs). A run without ``mix`` writes attributes and quarantine, and counts documents as
    ``passed``.

    ``dedup_state`` (a run with the ``dedup`` stage only) is a folder that carries what the
    deduplication has seen from run to run (:mod:`~olmo_assets.curation.stateful`): loaded
    first if it exists, so everything earlier runs saw counts as earlier than this run's
    documents, and replaced atomically by the updated state once the output is in place.
    """
    target = Path(output)
    start = time.perf_counter()
    counts = {source.name: SourceCounts() for source in config.sources}
    workers = config.workers or os.cpu_count() or 1
    unknown = set(stages) - set(STAGE_NAMES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; stages are {', '.join(STAGE_NAMES)}")
    if "tag" not in stages:
        config = config.replace(taggers=[], sources=[s.replace(taggers=[]) for s in config.sources])
    _check_taggers(config)
    state = None if dedup_state is None else Path(dedup_state)
    if state is not None and "dedup" not in stages:
        raise ValueError(f"a dedup state ({state}) needs the dedup stage; stages are {stages}")
    with ExitStack() as stack:
        scratch = None
        if "dedup" in stages and config.dedup.minhash and config.dedup.minhash_method == "clusters":
            scratch = stack.enter_context(scratch_folder(target))
        with staged_folder(target) as root:
            root.mkdir()
            curator = _Curator(
                config,
                root,
                stages=frozenset(stages),
                attributes_from=[Path(p) for p in attributes_from or []],
                dedup_state=state,
                scratch=scratch,
            )
            if state is not None and not curator.stateful.active:
                raise ValueError(
                    f"a dedup state ({state}) was asked for, but this config deduplicates "
                    "nothing (dedup.url, exact, paragraphs and minhash are false and there is "
                    "no decontamination)"
                )
            if state is not None and any(
                run["output"] == str(target.resolve()) for run in curator.stateful.runs
            ):
                raise ValueError(
                    f"the dedup state in {state} already holds the documents of the run that "
                    f"wrote {target}: against it, this run would remove them all as duplicates "
                    "of themselves; write another output folder, or use the state as it was "
                    "before that run"
                )
            used = {name for source in config.sources for name in _source_taggers(config, source)}
            executor = _executor(workers, sorted(used))
            bar = tqdm(desc="curate", unit="doc", disable=not progress)
            try:
                for source in config.sources:
                    _run_source(curator, executor, source, counts[source.name], workers, bar)
                curator.finish(counts)
            finally:
                bar.close()
                if executor is not None:
                    executor.shutdown(cancel_futures=True)
                curator.writers.close()
            report_data: dict[str, Any] = {}
            if config.tokenize and "mix" in stages:
                report_data["tokens"] = _tokenize_outputs(root, config)
            summary = CurationSummary(target, counts, time.perf_counter() - start)
            report_data |= summary.to_dict()
            (root / "report.json").write_text(
                json.dumps(report_data, indent=2, sort_keys=True) + "\n"
            )
        if state is not None:
            # After the output is in place: a failed run never leaves its documents in the
            # state (a rerun would flag them all as duplicates of themselves).
            with staged_folder(state) as staged:
                summary.dedup_state = curator.stateful.save(staged, output=str(target.resolve()))
    return summary
