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

from olmo_assets.curation.outputs import JsonlWriter, ParquetWriter
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
    "CURATED_SPLITS",
    "build_eval_data",
    "build_source",
    "dedup_accounting",
    "deduplicate",
    "mix",
    "mix_accounting",
    "no_contamination_left",
    "raw_accounting",
    "shard_manifest",
    "tag_accounting",
    "tag_source",
    "write_shard_manifests",
]


_SAMPLE_DOCUMENTS = 5
"""A raw source's first documents shown on its page."""
_EXAMPLES_PER_GROUP = 3
"""Examples of one filter (or one source's quarantine) in a table of examples."""


def build_source(lab: Lab, source: str, shard: str) -> StepResult:
    """One shard of a source as Dolma-format ``jsonl.gz``: a built-in source assembled from
    what is on this machine, or the shard's files read (:mod:`olmo_assets.curation.external`);
    records that cannot be documents are quarantined (``quarantine/``), and the files read
    are listed with their size and fingerprint as read (``files.json``). Its first documents
    are shown (``sample_documents``: id, characters, metadata keys, text start)."""
    spec = lab.params.sources[source]
    stats: dict[str, Any] = {}
    with staged_folder(lab.raw(source, shard)) as staged:
        staged.mkdir()
        if spec.built_in:
            records: Iterable[Any] = _built_in_documents(spec)
        else:
            records = _file_documents(lab, source, shard, staged, stats)
        writer = JsonlWriter(staged)
        quarantine = ParquetWriter(staged / "quarantine")
        num_docs = num_bytes = rejected = 0
        samples: Rows = []
        held: list[Any] = []  # rejects, written a thousand at a time
        # The writer's gzip carries no timestamp: the same documents give the same bytes, so
        # a rerun changes no content hash.
        for record in records:
            if isinstance(record, dict):
                writer.write([{**record, "source": source}])
                num_docs += 1
                num_bytes += len(record["text"].encode("utf-8"))
                if len(samples) < _SAMPLE_DOCUMENTS:
                    samples.append(document_row(record))
            else:
                held.append(record)
                rejected += 1
                if len(held) >= 1000:
                    quarantine.write(_rejected_frame(source, held))
                    held = []
        quarantine.write(_rejected_frame(source, held))
        writer.close()
        quarantine.close()
        if num_docs == 0:
            what = spec.kind if spec.built_in else f"{len(stats.get('files', []))} file(s)"
            raise InputError(
                f"source {source!r} shard {shard} ({what}) gave no documents"
                + (f": all {rejected} records were unreadable" if rejected else "")
            )
        manifest = {"documents": num_docs, "quarantined": rejected, **stats}
        (staged / "files.json").write_text(json.dumps(manifest, indent=1) + "\n")
    metadata: dict[str, Any] = {
        "documents": num_docs,
        "text_bytes": num_bytes,
        "quarantined": rejected,
        "kind": spec.kind or "text",
    }
    tables: dict[str, Rows] = {"sample_documents": samples}
    if not spec.built_in:
        metadata |= {"format": spec.format, "num_files": len(stats["files"])}
        metadata |= {f"skipped_{k}": v for k, v in sorted(stats["skipped"].items())}
        tables["files"] = [dict(f) for f in stats["files"]]
    return StepResult(metadata, tables)


def _built_in_documents(spec: Any) -> Iterable[dict[str, Any]]:
    from olmo_assets.curation import local_sources

    return {
        "code": lambda: local_sources.code_documents(
            max_bytes=int(spec.max_mb * 1e6) if spec.max_mb else None
        ),
        "prose": local_sources.prose_documents,
        "markdown": local_sources.markdown_documents,
        "multilingual": local_sources.multilingual_documents,
    }[spec.kind]()


def _file_documents(
    lab: Lab, source: str, shard: str, staged: Path, stats: dict[str, Any]
) -> Iterable[Any]:
    """The shard's records (documents and rejects), as the files are when read. ``stats``
    is filled in as they are read: the files (url, size, fingerprint), records, skipped."""
    from olmo_assets.curation import external

    spec = lab.params.sources[source]
    from olmo_assets.lab.shards import located

    files = external.stat_files(located(lab, lab.plan.urls(source, shard)))
    fields = external.Fields(
        id=spec.id_field,
        text=spec.text_field,
        url=spec.url_field,
        metadata=tuple(spec.metadata_fields),
    )
    read = external.ReadStats()
    stats["files"] = [{"url": f.url, "size": f.size, "fingerprint": f.fingerprint} for f in files]
    yield from external.iter_documents(files, spec.format, fields, stats=read)
    stats["records"] = read.records
    stats["skipped"] = dict(read.skipped)


def _rejected_frame(source: str, rejected: list[Any]) -> Any:
    """Quarantined records in the curation chain's quarantine schema."""
    import polars as pl

    rows = [
        {"source": source, "file": r.url, "line": r.line, "error": r.reason, "raw": r.raw}
        for r in rejected
    ]
    schema = {"source": pl.String, "file": pl.String, "line": pl.Int64, "error": pl.String,
              "raw": pl.Binary}  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


def raw_accounting(lab: Lab, source: str, shard: str) -> CheckResult:
    """Read back: documents written + records quarantined + records skipped (a crawl's
    non-pages) = records read, and every file
    read is as it was when read (size and fingerprint), so the shard is one version of them."""
    from olmo_assets.curation import external

    folder = lab.raw(source, shard)
    manifest = json.loads((folder / "files.json").read_text())
    documents = count_lines(folder)
    quarantined = count_rows(folder / "quarantine")
    # A crawl's records that are not pages (requests, images) are skipped, and counted.
    skipped = sum(manifest.get("skipped", {}).values())
    read = manifest.get("records", manifest["documents"] + manifest["quarantined"])
    changed = []
    if manifest.get("files"):
        now = external.stat_files([f["url"] for f in manifest["files"]])
        changed = [
            f["url"]
            for f, current in zip(manifest["files"], now, strict=True)
            if (f["size"], f["fingerprint"]) != (current.size, current.fingerprint)
        ]
    return CheckResult(
        documents + quarantined + skipped == read and not changed,
        {
            "records_read": read,
            "documents": documents,
            "quarantined": quarantined,
            "skipped": skipped,
            "files_changed_since": ", ".join(changed) or "none",
        },
    )


def _eval_texts(key: str) -> list[tuple[int, str]]:
    """Each example of the task with partition key ``key`` as (row, text): its prompt with
    the correct answer (a generative task's first gold answer; zero-shot, so no shot's text)."""
    from olmo_nn.eval.formats import task_of_partition
    from olmo_nn.eval.generative import generative_spec, load_generative_task
    from olmo_nn.eval.tasks import load_task

    task = task_of_partition(key)
    if generative_spec(task) is not None:
        return [
            (example.index, example.prompt + " " + example.answers[0])
            for example in load_generative_task(task, limit=None, num_shots=0)
        ]
    return [
        (i.index, i.contexts[i.label] + i.continuations[i.label])
        for i in load_task(task, limit=None)
    ]


def build_eval_data(lab: Lab) -> StepResult:
    """The evaluation tasks' examples as Dolma documents: what decontamination removes."""
    counts = {}
    with staged_folder(lab.eval_data) as staged:
        staged.mkdir()
        writer = JsonlWriter(staged)
        for task in lab.params.eval.tasks:
            texts = _eval_texts(task)
            counts[task] = len(texts)
            writer.write(
                [{"id": f"{task}-{index}", "text": text, "source": task} for index, text in texts]
            )
        writer.close()
    rows = [{"task": t, "examples": n} for t, n in counts.items()]
    return StepResult({"examples": sum(counts.values())}, {"tasks": rows})


def raw_files(lab: Lab, source: str, shard: str | None = None) -> list[Path]:
    """The documents of a source's shards (or of one), in the order every stage reads them:
    shard by shard in key order, then file by file. A shard not materialized is an error
    that says how to materialize it."""
    from olmo_assets.lab.pipeline import StageRun, stage_named

    shards = lab.source_shards(source) if shard is None else [shard]
    missing = [k for k in shards if not lab.raw(source, k).is_dir()]
    if missing:
        names = ", ".join(StageRun(stage_named("source"), (source, k)).dvc_name for k in missing)
        raise FileNotFoundError(
            f"source {source!r}: {lab.raw(source, missing[0])} does not exist; materialize "
            f"raw_source/{source} partition(s) {', '.join(missing)} first (or `dvc repro {names}`)"
        )
    return [path for k in shards for path in sorted(lab.raw(source, k).glob("*.jsonl.gz"))]


def _curation_config(
    lab: Lab, sources: Iterable[str], *, mixing: bool, shard: str | None = None
) -> Any:
    """The mix file's config over ``sources`` (over one shard of them when ``shard`` is
    given). Only the mix reads ``curation.validation_fraction`` (tags and dedup never split),
    and only dedup reads the evaluation data: each stage's config holds exactly what that
    stage declares."""
    from olmo_assets.curation.config import CurationConfig, SourceConfig
    from olmo_assets.curation.mixes import code_source

    params = lab.params
    fraction = params.curation.validation_fraction if mixing else 0.0
    configs = []
    for name in sources:
        spec = params.sources[name]
        paths = [str(path) for path in raw_files(lab, name, shard)]
        if spec.code:
            config = code_source(name, paths, validation_fraction=fraction)
        else:
            # HTML pages and crawls hold HTML: the chain extracts the main text first.
            config = SourceConfig(
                name=name, paths=paths, validation_fraction=fraction, html=_holds_html(spec)
            )
        # The mix keeps each shard's documents apart (each raw shard is a folder of its own),
        # so each shard is tokenized on its own.
        configs.append(config.replace(outputs_by_folder=mixing))
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


def tag_source(lab: Lab, source: str, shard: str) -> StepResult:
    """The taggers over one shard of a source: ``attributes/<tagger>/<source>/`` (no
    decisions yet)."""
    from olmo_assets.curation.pipeline import curate

    output = lab.tagged(source, shard)
    curate(_curation_config(lab, [source], mixing=False, shard=shard), output, stages=("tag",))
    report = json.loads((output / "report.json").read_text())
    metadata, table = _source_counts(report, decided=False)
    taggers = sorted(p.name for p in (output / "attributes").iterdir())
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

    # Every shard's attributes, in the order the mix reads the shards' documents.
    attributes = [lab.tagged(s, k) for s in lab.params.sources for k in lab.source_shards(s)]
    attributes.append(lab.dedup)
    for folder in attributes:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist: materialize it before the mix")
    config = _curation_config(lab, lab.params.sources, mixing=True)
    curate(config, lab.curated, stages=("mix",), attributes_from=[*attributes])
    write_shard_manifests(lab)
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


#: A source shard's curated folders, by split: the kept documents and the validation split.
CURATED_SPLITS = {"train": "documents", "validation": "validation"}


def shard_manifest(lab: Lab, source: str, shard: str) -> dict[str, Any]:
    """What the mix kept of one source shard: per split, its files (relative to the curated
    corpus) with their size and MD5. Tokenizing the shard reads the files it names; a shard
    without one was planned after the mix ran."""
    from olmo_assets.lab.hashing import file_md5

    splits: dict[str, list[dict[str, Any]]] = {}
    for split, kind in CURATED_SPLITS.items():
        folder = lab.curated / kind / source / shard
        splits[split] = [
            {
                "path": path.relative_to(lab.curated).as_posix(),
                "size": path.stat().st_size,
                "md5": file_md5(path),
            }
            for path in sorted(folder.glob("*.jsonl.gz"))
        ]
    return {"source": source, "shard": shard, "files": splits}


def write_shard_manifests(lab: Lab) -> None:
    """A manifest per planned source shard (:func:`shard_manifest`), one with no files for a
    shard the mix kept nothing of."""
    for source in lab.params.sources:
        for shard in lab.source_shards(source):
            path = lab.curated_shard(source, shard)
            path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps(shard_manifest(lab, source, shard), indent=1) + "\n"
            path.write_text(text, encoding="utf-8")


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
        texts = raw_documents(raw_files(lab, source), [row["id"] for row in shown])
        for row in shown:
            row["text_start"] = text_start(texts[row["id"]])
    return rows


# -- checks: counted from the files written ----------------------------------------------------

_COPY = re.compile(r"^(?P<id>.*)#\d+$")
_CURATED_FILES = "*/*.jsonl.gz"
"""A source's curated files (kept documents, validation split): shard folder by folder."""


def count_lines(where: Path | list[Path], pattern: str = "*.jsonl.gz") -> int:
    """Records in (gzipped) JSON-lines files, a folder of them or a list: their newlines."""
    total = 0
    for path in sorted(where.glob(pattern)) if isinstance(where, Path) else where:
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
    for path in sorted(folder.glob(_CURATED_FILES)):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            ids += [json.loads(line)["id"] for line in handle]
    originals = set(ids)
    copies = [i for i in ids if (match := _COPY.match(i)) is not None and match["id"] in originals]
    return len(ids) - len(copies)


def _attribute_accounting(
    lab: Lab, output: Path, expected: dict[str, set[str]], shard: str | None = None
) -> CheckResult:
    """Every expected tagger of each source wrote one row per record read (of every shard,
    or of ``shard``) that was not quarantined (a missing tagger folder counts as no rows)."""
    rows = []
    for source, taggers in expected.items():
        read = count_lines(raw_files(lab, source, shard))
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


def tag_accounting(lab: Lab, source: str, shard: str) -> CheckResult:
    """Each tagger the mix configures for the source (by the attribute prefix it writes)."""
    from olmo_assets.curation.pipeline import build_tagger

    config = _curation_config(lab, [source], mixing=False, shard=shard)
    (spec,) = config.sources
    names = spec.taggers if spec.taggers is not None else config.taggers
    taggers = {str(build_tagger(name, config.fasttext_classifiers).name) for name in names}
    return _attribute_accounting(lab, lab.tagged(source, shard), {source: taggers}, shard)


def dedup_accounting(lab: Lab) -> CheckResult:
    """Every dedup tagger that wrote attributes for any source, for every source."""
    taggers = {p.name for p in (lab.dedup / "attributes").glob("*") if p.is_dir()}
    # Main-text extraction (``html``) runs on the HTML sources only.
    expected = {
        name: taggers if _holds_html(spec) else taggers - {"html"}
        for name, spec in lab.params.sources.items()
    }
    return _attribute_accounting(lab, lab.dedup, expected)


def _holds_html(spec: Any) -> bool:
    """Whether a source's documents are HTML (pages, a crawl): the chain extracts their text."""
    return not spec.built_in and spec.format in ("html", "warc")


def mix_accounting(lab: Lab) -> CheckResult:
    """Per source: kept + validation + removed + quarantined records written = records read;
    and each shard's manifest names the files the mix wrote for it, as they are."""
    rows = []
    for source in lab.params.sources:
        counts = {
            "read": count_lines(raw_files(lab, source)),
            "kept": _kept_documents(lab.curated / "documents" / source),
            "validation": count_lines(lab.curated / "validation" / source, _CURATED_FILES),
            "removed": count_rows(lab.curated / "removed" / source),
            "quarantined": count_rows(lab.curated / "quarantine" / source),
        }
        accounted = sum(v for k, v in counts.items() if k != "read")
        rows.append({"source": source, **counts, "ok": accounted == counts["read"]})
    # Each shard's manifest names exactly the files the mix wrote for it, as they are.
    stale = [
        f"{source}/{shard}"
        for source in lab.params.sources
        for shard in lab.source_shards(source)
        if not lab.curated_shard(source, shard).is_file()
        or json.loads(lab.curated_shard(source, shard).read_text(encoding="utf-8"))
        != shard_manifest(lab, source, shard)
    ]
    sources = list(lab.params.sources)
    return CheckResult(
        all(r["ok"] for r in rows) and not stale,
        {
            "records_read": sum(r["read"] for r in rows),
            "shard_manifests_wrong": ", ".join(stale) or "none",
        },
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
            if any((lab.curated / "documents" / source).glob(_CURATED_FILES)):
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

    files = sorted(folder.glob(_CURATED_FILES))
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
        texts[source] = raw_documents(raw_files(lab, source), ids)
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
