"""Curation steps: raw sources, evaluation data, tags, dedup, the mix; and their checks.

Each step is a thin call into :mod:`olmo_assets.curation`; each check re-reads the files a
step wrote (never the step's own counters), so a lost or duplicated record fails it.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from olmo_assets.curation.outputs import JsonlWriter
from olmo_assets.lab.params import Lab
from olmo_assets.lab.samples import (
    document_row,
    raw_documents,
    spread,
    text_start,
)
from olmo_assets.lab.steps.results import (
    CheckResult,
    InputError,
    Rows,
    StepResult,
    relative,
)
from olmo_nn.atomic import staged_folder

__all__ = [
    "build_eval_data",
    "build_source",
    "dedup_accounting",
    "deduplicate",
    "mix",
    "mix_accounting",
    "no_contamination_left",
    "tag_accounting",
    "tag_source",
]


_SAMPLE_DOCUMENTS = 5
"""A raw source's first documents shown on its page."""
_EXAMPLES_PER_GROUP = 3
"""Examples of one filter (or one source's quarantine) in a table of examples."""


def build_source(lab: Lab, source: str) -> StepResult:
    """One raw source as Dolma-format ``jsonl.gz``, assembled from what is on this machine;
    its first documents (``sample_documents``: id, characters, metadata keys, text start)."""
    from olmo_assets.curation import local_sources

    spec = lab.params.sources[source]
    documents = {
        "code": lambda: local_sources.code_documents(
            max_bytes=int(spec.max_mb * 1e6) if spec.max_mb else None
        ),
        "prose": local_sources.prose_documents,
        "markdown": local_sources.markdown_documents,
        "multilingual": local_sources.multilingual_documents,
    }[spec.kind]()
    num_docs = num_bytes = 0
    samples: Rows = []
    # The writer's gzip carries no timestamp: the same documents give the same bytes, so a
    # rerun changes no content hash.
    with staged_folder(lab.raw(source)) as staged:
        staged.mkdir()
        writer = JsonlWriter(staged)
        for doc in documents:
            writer.write([{**doc, "source": source}])
            num_docs += 1
            num_bytes += len(doc["text"].encode("utf-8"))
            if len(samples) < _SAMPLE_DOCUMENTS:
                samples.append(document_row(doc))
        writer.close()
        if num_docs == 0:
            raise InputError(f"source {source!r} ({spec.kind}) produced no documents here")
    return StepResult(
        {"documents": num_docs, "text_bytes": num_bytes, "kind": spec.kind},
        {"sample_documents": samples},
    )


def build_eval_data(lab: Lab) -> StepResult:
    """The evaluation tasks' examples as Dolma documents: what decontamination removes."""
    from olmo_nn.eval.tasks import load_task

    counts = {}
    with staged_folder(lab.eval_data) as staged:
        staged.mkdir()
        writer = JsonlWriter(staged)
        for task in lab.params.eval.tasks:
            instances = load_task(task, limit=None)
            counts[task] = len(instances)
            writer.write(
                [
                    {
                        "id": f"{task}-{instance.index}",
                        "text": instance.contexts[instance.label]
                        + instance.continuations[instance.label],
                        "source": task,
                    }
                    for instance in instances
                ]
            )
        writer.close()
    rows = [{"task": t, "examples": n} for t, n in counts.items()]
    return StepResult({"examples": sum(counts.values())}, {"tasks": rows})


def _curation_config(lab: Lab, sources: Iterable[str], *, mixing: bool) -> Any:
    """The mix file's config over ``sources``. Only the mix reads
    ``curation.validation_fraction`` (tags and dedup never split), and only dedup reads the
    evaluation data: each stage's config holds exactly what that stage declares."""
    from olmo_assets.curation.config import CurationConfig, SourceConfig
    from olmo_assets.curation.mixes import code_source

    params = lab.params
    fraction = params.curation.validation_fraction if mixing else 0.0
    configs = []
    for name in sources:
        if not lab.raw(name).is_dir():
            raise FileNotFoundError(
                f"source {name!r}: {lab.raw(name)} does not exist; materialize "
                f"raw_source/{name} first (or `dvc repro source@{name}`)"
            )
        paths = [str(lab.raw(name))]
        if params.sources[name].kind == "code":
            configs.append(code_source(name, paths, validation_fraction=fraction))
        else:
            configs.append(SourceConfig(name=name, paths=paths, validation_fraction=fraction))
    return CurationConfig.load(lab.repo / params.curation.mix).replace(
        sources=configs, workers=params.workers, decontamination_paths=[]
    )


def _source_counts(
    report: dict[str, Any], *, decided: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Counts per source (a table) and in all. ``decided``: a mix ran, so documents were kept
    or removed; before it (tags, dedup) they all ``passed`` on, or were quarantined."""
    outcomes = ("kept", "validation", "removed") if decided else ("passed",)
    columns = ("input_records", *outcomes, "quarantined")
    rows = [
        {"source": source} | {k: counts[k] for k in columns}
        for source, counts in report["sources"].items()
    ]
    metadata: dict[str, Any] = {k: sum(r[k] for r in rows) for k in columns}
    return metadata, rows


def tag_source(lab: Lab, source: str) -> StepResult:
    """The taggers over one source: ``attributes/<tagger>/<source>/`` (no decisions yet)."""
    from olmo_assets.curation.pipeline import curate

    curate(_curation_config(lab, [source], mixing=False), lab.tagged(source), stages=("tag",))
    report = json.loads((lab.tagged(source) / "report.json").read_text())
    metadata, table = _source_counts(report, decided=False)
    taggers = sorted(p.name for p in (lab.tagged(source) / "attributes").iterdir())
    metadata["taggers"] = ", ".join(taggers)
    return StepResult(metadata, {"counts": table})


def deduplicate(lab: Lab) -> StepResult:
    """URL, exact, paragraph and fuzzy dedup across sources, and decontamination."""
    from olmo_assets.curation.pipeline import curate

    config = _curation_config(lab, lab.params.sources, mixing=False)
    evaluation = sorted(str(p) for p in lab.eval_data.glob("*.jsonl.gz"))
    if not evaluation:
        raise FileNotFoundError(
            f"{lab.eval_data} holds no evaluation data: materialize eval_task_data first"
        )
    curate(config.replace(decontamination_paths=evaluation), lab.dedup, stages=("dedup",))
    report = json.loads((lab.dedup / "report.json").read_text())
    metadata, table = _source_counts(report, decided=False)
    metadata["decontaminated_against"] = relative(lab, lab.eval_data)
    return StepResult(metadata, {"counts": table})


def mix(lab: Lab) -> StepResult:
    """Decisions, span replacement, sampling: the kept documents and the validation splits
    (every source, code included, holds out ``curation.validation_fraction`` of its kept
    documents). Tables: counts per source, removals per stage, and a few documents each
    filter removed (``removed_examples``)."""
    from olmo_assets.curation.pipeline import curate

    attributes = [lab.tagged(s) for s in lab.params.sources] + [lab.dedup]
    for folder in attributes:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist: materialize it before the mix")
    config = _curation_config(lab, lab.params.sources, mixing=True)
    curate(config, lab.curated, stages=("mix",), attributes_from=[*attributes])
    report = json.loads((lab.curated / "report.json").read_text())
    metadata, table = _source_counts(report, decided=True)
    stage_rows = [
        {"source": source, "stage": stage, "removed": number}
        for source, counts in report["sources"].items()
        for stage, number in counts["removed_by_stage"].items()
    ]
    # Perplexity is measured on the validation splits: say which sources it cannot cover.
    metadata["sources_without_validation"] = (
        ", ".join(s for s, counts in report["sources"].items() if not counts["validation"])
        or "none"
    )
    metadata["removed_as_contaminated"] = sum(
        counts["removed_by_stage"].get("decontamination", 0)
        for counts in report["sources"].values()
    )
    return StepResult(
        metadata,
        {
            "counts": table,
            "removed_by_stage": stage_rows,
            "removed_examples": _removed_examples(lab),
        },
    )


def _removed_examples(lab: Lab) -> Rows:
    """A few documents each filter removed (``stage/reason``), alternating between the sources
    it removed documents from: ``source, stage, reason, id, text_start`` (of the raw text)."""
    import polars as pl

    by_filter: dict[tuple[str, str], dict[str, list[str]]] = {}
    for source in lab.params.sources:
        files = sorted((lab.curated / "removed" / source).glob("*.parquet"))
        if not files:
            continue
        removed = pl.read_parquet([str(p) for p in files], columns=["id", "stage", "reason"])
        heads = removed.group_by(["stage", "reason"], maintain_order=True).head(_EXAMPLES_PER_GROUP)
        for stage, reason, doc_id in heads.select("stage", "reason", "id").iter_rows():
            by_filter.setdefault((stage, reason), {}).setdefault(source, []).append(doc_id)
    groups = {
        (stage, reason): [
            {"source": source, "stage": stage, "reason": reason, "id": ids[depth]}
            for depth in range(_EXAMPLES_PER_GROUP)
            for source, ids in per_source.items()
            if depth < len(ids)
        ]
        for (stage, reason), per_source in sorted(by_filter.items())
    }
    rows: Rows = spread(groups, per_group=_EXAMPLES_PER_GROUP)
    for source in dict.fromkeys(row["source"] for row in rows):
        shown = [row for row in rows if row["source"] == source]
        texts = raw_documents(lab.raw(source), [row["id"] for row in shown])
        for row in shown:
            row["text_start"] = text_start(texts[row["id"]])
    return rows


# -- checks: counted from the files written ----------------------------------------------------

_COPY = re.compile(r"^(?P<id>.*)#\d+$")


def count_lines(folder: Path, pattern: str = "*.jsonl.gz") -> int:
    """Records in a folder of (gzipped) JSON-lines files: their newline count."""
    total = 0
    for path in sorted(folder.glob(pattern)):
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                total += chunk.count(b"\n")
    return total


def count_rows(folder: Path) -> int:
    """Rows in a folder of parquet files (0 when the folder does not exist)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(path).metadata.num_rows for path in sorted(folder.glob("*.parquet")))


def _kept_documents(folder: Path) -> int:
    """Kept documents: lines written, less the mix's sampled copies (``<id>#<n>`` beside
    ``<id>``), so a lost or a duplicated line both show."""
    ids: list[str] = []
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            ids += [json.loads(line)["id"] for line in handle]
    originals = set(ids)
    copies = [i for i in ids if (match := _COPY.match(i)) is not None and match["id"] in originals]
    return len(ids) - len(copies)


def _attribute_accounting(lab: Lab, output: Path, expected: dict[str, set[str]]) -> CheckResult:
    """Every expected tagger of each source wrote one row per record read that was not
    quarantined (a tagger folder that is missing counts as zero rows)."""
    rows = []
    for source, taggers in expected.items():
        read = count_lines(lab.raw(source))
        quarantined = count_rows(output / "quarantine" / source)
        for tagger in sorted(taggers):
            written = count_rows(output / "attributes" / tagger / source)
            rows.append(
                {
                    "source": source,
                    "tagger": tagger,
                    "read": read,
                    "written": written,
                    "quarantined": quarantined,
                    "ok": written + quarantined == read,
                }
            )
    failed = [r for r in rows if not r["ok"]]
    return CheckResult(
        bool(rows) and not failed,
        {
            "records_read": sum({r["source"]: r["read"] for r in rows}.values()),
            "taggers": ", ".join(sorted({str(r["tagger"]) for r in rows})) or "none",
            "mismatches": len(failed),
        },
        {"accounting": rows} | _quarantined_examples(lab, output, list(expected)),
    )


def _quarantined_examples(lab: Lab, output: Path, sources: list[str]) -> dict[str, Rows]:
    """``{"quarantined": rows}`` when a run quarantined records (else nothing): a few per
    source, each with its ``file`` and ``line``, ``error``, ``id`` (when the record has one)
    and ``raw_start`` (the record as read)."""
    import polars as pl

    groups: dict[str, Rows] = {}
    for source in sources:
        files = sorted((output / "quarantine" / source).glob("*.parquet"))
        if not files:
            continue
        frame = pl.read_parquet([str(p) for p in files]).head(_EXAMPLES_PER_GROUP)
        groups[source] = [_quarantined_row(lab, row) for row in frame.iter_rows(named=True)]
    rows = spread(groups, per_group=_EXAMPLES_PER_GROUP)
    return {"quarantined": rows} if rows else {}


def _quarantined_row(lab: Lab, row: dict[str, Any]) -> dict[str, Any]:
    raw = (row["raw"] or b"").decode("utf-8", errors="replace")
    try:
        record = json.loads(raw)
    except json.JSONDecodeError:  # quarantined for not being JSON: it names no id
        record = None
    doc_id = record.get("id") if isinstance(record, dict) else None
    file = row["file"]
    if file and Path(file).resolve().is_relative_to(lab.repo.resolve()):
        file = relative(lab, Path(file))
    return {
        "source": row["source"],
        "file": file,
        "line": row["line"],
        "error": row["error"],
        "id": None if doc_id is None else str(doc_id),
        "raw_start": text_start(raw),
    }


def tag_accounting(lab: Lab, source: str) -> CheckResult:
    """Each tagger the mix configures for the source (by the attribute prefix it writes)."""
    from olmo_assets.curation.pipeline import build_tagger

    config = _curation_config(lab, [source], mixing=False)
    (spec,) = config.sources
    names = spec.taggers if spec.taggers is not None else config.taggers
    taggers = {str(build_tagger(name, config.fasttext_classifiers).name) for name in names}
    return _attribute_accounting(lab, lab.tagged(source), {source: taggers})


def dedup_accounting(lab: Lab) -> CheckResult:
    """Every dedup tagger that wrote attributes for any source, for every source."""
    taggers = {p.name for p in (lab.dedup / "attributes").glob("*") if p.is_dir()}
    return _attribute_accounting(lab, lab.dedup, dict.fromkeys(lab.params.sources, taggers))


def mix_accounting(lab: Lab) -> CheckResult:
    """Per source: kept + validation + removed + quarantined records written = records read."""
    rows = []
    for source in lab.params.sources:
        counts = {
            "read": count_lines(lab.raw(source)),
            "kept": _kept_documents(lab.curated / "documents" / source),
            "validation": count_lines(lab.curated / "validation" / source),
            "removed": count_rows(lab.curated / "removed" / source),
            "quarantined": count_rows(lab.curated / "quarantine" / source),
        }
        accounted = sum(v for k, v in counts.items() if k != "read")
        rows.append({"source": source, **counts, "ok": accounted == counts["read"]})
    sources = list(lab.params.sources)
    return CheckResult(
        all(r["ok"] for r in rows),
        {"records_read": sum(r["read"] for r in rows)},
        {"accounting": rows} | _quarantined_examples(lab, lab.curated, sources),
    )


_FLAGGED_EXAMPLES = 10
"""Flagged documents shown by the contamination check."""


def no_contamination_left(lab: Lab) -> CheckResult:
    """No kept document carries dedup's contamination flag (ids compared within a source);
    a source with kept documents but no flags fails too (dedup ran without the evaluation
    data).

    It shows what decontamination flagged: per source, the documents flagged, removed and
    kept (``by_source``); and a few flagged documents (``flagged``: the kept ones first),
    each with what the mix did with it, its first paragraph found in the evaluation data
    and its text start."""
    import polars as pl

    by_source: Rows = []
    leftover: Rows = []
    handled: dict[str, Rows] = {}
    unflagged: list[str] = []
    for source in lab.params.sources:
        flag_files = sorted((lab.dedup / "attributes" / "decontam" / source).glob("*.parquet"))
        if not flag_files:
            if any((lab.curated / "documents" / source).glob("*.jsonl.gz")):
                unflagged.append(source)
            continue
        flagged = pl.read_parquet([str(p) for p in flag_files]).filter(
            pl.col("decontam__is_contaminated")
        )
        kept = _ids(lab.curated / "documents" / source)
        validation = _ids(lab.curated / "validation" / source)
        removed = _removed_by(lab.curated / "removed" / source)
        found = [
            {
                "source": source,
                "id": doc_id,
                "outcome": "kept"
                if doc_id in kept
                else "validation"
                if doc_id in validation
                else removed.get(doc_id, "not in the mix's output"),
                "spans": spans,
            }
            for doc_id, spans in flagged.select("id", "decontam__spans").iter_rows()
        ]
        by_source.append(
            {
                "source": source,
                "flagged": len(found),
                "removed": sum(row["id"] in removed for row in found),
                "kept": sum(row["outcome"] == "kept" for row in found),
            }
        )
        leftover += [row for row in found if row["outcome"] == "kept"]
        handled[source] = [row for row in found if row["outcome"] != "kept"]
    shown = leftover[:_FLAGGED_EXAMPLES]
    shown += spread(handled, per_group=_FLAGGED_EXAMPLES, limit=_FLAGGED_EXAMPLES - len(shown))
    tables = {"by_source": by_source} if by_source else {}
    if shown:
        tables["flagged_examples"] = _flagged_rows(lab, shown)
    return CheckResult(
        not leftover and not unflagged,
        {
            "flagged": sum(row["flagged"] for row in by_source),
            "removed": sum(row["removed"] for row in by_source),
            "contaminated_kept": len(leftover),
            "sources_without_flags": ", ".join(unflagged) or "none",
        },
        tables,
    )


def _ids(folder: Path) -> set[str]:
    """The ids of a folder of Dolma ``jsonl.gz`` files (none when it has no files)."""
    import polars as pl

    files = sorted(folder.glob("*.jsonl.gz"))
    if not files:
        return set()
    return set(pl.scan_ndjson([str(p) for p in files]).select("id").collect()["id"].to_list())


def _removed_by(folder: Path) -> dict[str, str]:
    """``id -> "stage/reason"`` of the documents the mix removed from one source."""
    import polars as pl

    files = sorted(folder.glob("*.parquet"))
    if not files:
        return {}
    frame = pl.read_parquet([str(p) for p in files], columns=["id", "stage", "reason"])
    return {i: f"{stage}/{reason}" for i, stage, reason in frame.iter_rows()}


def _flagged_rows(lab: Lab, flagged: Rows) -> Rows:
    """Flagged documents as rows: ``source, id, outcome, matched_paragraphs`` (how many of its
    paragraphs are evaluation text), ``matched_text`` (the first) and ``text_start``."""
    texts: dict[str, dict[str, str]] = {}
    for source in dict.fromkeys(row["source"] for row in flagged):
        ids = [row["id"] for row in flagged if row["source"] == source]
        texts[source] = raw_documents(lab.raw(source), ids)
    rows = []
    for row in flagged:
        text = texts[row["source"]].get(row["id"], "")
        spans = row["spans"] or []
        first = spans[0] if spans else None
        rows.append(
            {
                "source": row["source"],
                "id": row["id"],
                "outcome": row["outcome"],
                "matched_paragraphs": len(spans),
                "matched_text": text_start(text[first["start"] : first["end"]]) if first else None,
                "text_start": text_start(text),
            }
        )
    return rows
