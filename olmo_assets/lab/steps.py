"""The pipeline's steps: one function per artifact, each a thin call into the libraries.

A step reads its inputs and parameters from the :class:`Lab`, writes its output folder (the
folder appears complete or not at all) and returns a :class:`StepResult`: the folders it
wrote, the metadata a researcher wants to see, and the outcome of its checks. The same step
runs from the Dagster UI (an asset launching ``python -m olmo_assets.defs.stage``), from
``dvc repro`` (the stage's command is that same line) and by hand; nothing here imports
Dagster or DVC.

``STEPS`` lists them with the parameter sections they read and the arguments they take
(a source name, a checkpoint step, a task).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olmo_assets.curation.outputs import JsonlWriter
from olmo_assets.lab.params import Lab
from olmo_nn.atomic import staged_folder

__all__ = ["STEPS", "CheckResult", "Step", "StepResult", "run_step"]


@dataclass
class CheckResult:
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepResult:
    outputs: list[Path]
    """Folders written (their DVC content hashes are the artifacts' data versions)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Numbers and short strings, shown on the asset."""
    tables: dict[str, str] = field(default_factory=dict)
    """Markdown tables, shown on the asset."""
    images: dict[str, Path] = field(default_factory=dict)
    """Plots (PNG), shown on the asset."""
    checks: dict[str, CheckResult] = field(default_factory=dict)
    """Named checks (the asset checks of Dagster)."""


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[..., StepResult]
    params: tuple[str, ...]
    """Top-level sections of params.yaml this step reads."""
    arguments: tuple[str, ...] = ()
    """Names of its arguments: ``source``, ``step``, ``task``."""


def _markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "–" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


# -- sources -------------------------------------------------------------------------------------


def build_source(lab: Lab, source: str) -> StepResult:
    """One raw source as Dolma-format ``jsonl.gz``, assembled from what is on this machine."""
    from olmo_assets.curation import local_sources

    if source not in lab.params.sources:
        raise KeyError(f"unknown source {source!r}; params.yaml names {sorted(lab.params.sources)}")
    spec = lab.params.sources[source]
    documents = {
        "code": lambda: local_sources.code_documents(
            max_bytes=int(spec.max_mb * 1e6) if spec.max_mb else None
        ),
        "prose": local_sources.prose_documents,
        "markdown": local_sources.markdown_documents,
        "multilingual": local_sources.multilingual_documents,
    }[spec.kind]()
    target = lab.raw(source)
    num_docs = num_bytes = 0
    # The writer's gzip carries no timestamp: the same documents give the same bytes, so DVC
    # sees no change on a rerun.
    with staged_folder(target) as staged:
        staged.mkdir()
        writer = JsonlWriter(staged)
        for doc in documents:
            writer.write([{**doc, "source": source}])
            num_docs += 1
            num_bytes += len(doc["text"].encode("utf-8"))
        writer.close()
        if num_docs == 0:
            raise ValueError(f"source {source!r} ({spec.kind}) produced no documents here")
    return StepResult([target], {"documents": num_docs, "text_bytes": num_bytes, "kind": spec.kind})


def build_eval_data(lab: Lab) -> StepResult:
    """The evaluation tasks' examples as Dolma documents: what decontamination removes."""
    from olmo_nn.eval.tasks import load_task

    target = lab.eval_data
    counts = {}
    with staged_folder(target) as staged:
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
    return StepResult(
        [target], {"examples": sum(counts.values())}, tables={"tasks": _markdown_table(rows)}
    )


# -- curation ------------------------------------------------------------------------------------


def _curation_config(lab: Lab, sources: list[str] | None = None) -> Any:
    from olmo_assets.curation.config import CurationConfig, SourceConfig
    from olmo_assets.curation.mixes import code_source

    params = lab.params
    mix = CurationConfig.load(lab.repo / params.curation.mix)
    configs = []
    for name in sources if sources is not None else list(params.sources):
        paths = [str(lab.raw(name))]
        if not lab.raw(name).is_dir():
            raise FileNotFoundError(
                f"source {name!r}: {lab.raw(name)} does not exist; materialize raw_source "
                f"[{name}] first (or `dvc repro source@{name}`)"
            )
        if params.sources[name].kind == "code":
            configs.append(code_source(name, paths))
        else:
            configs.append(
                SourceConfig(
                    name=name, paths=paths, validation_fraction=params.curation.validation_fraction
                )
            )
    decontamination = sorted(str(p) for p in lab.eval_data.glob("*.jsonl.gz"))
    return mix.replace(
        sources=configs,
        workers=params.curation.workers,
        decontamination_paths=decontamination,
    )


def _source_counts(report: dict[str, Any], *, decided: bool) -> tuple[dict[str, Any], str]:
    """Counts per source (a table) and in all. ``decided``: a mix ran, so documents were kept
    or removed; before it (tags, dedup) they all ``passed`` on, or were quarantined."""
    outcomes = ("kept", "validation", "removed") if decided else ("passed",)
    columns = ("input_records", *outcomes, "quarantined")
    rows = [
        {"source": source} | {k: counts[k] for k in columns}
        for source, counts in report["sources"].items()
    ]
    metadata: dict[str, Any] = {k: sum(r[k] for r in rows) for k in columns}
    metadata["accounting_ok"] = bool(report["accounting_ok"])
    return metadata, _markdown_table(rows)


def _accounting_check(report: dict[str, Any]) -> CheckResult:
    return CheckResult(
        bool(report["accounting_ok"]),
        "every input record is kept, validation, removed or quarantined",
        {"sources": len(report["sources"])},
    )


def tag_source(lab: Lab, source: str) -> StepResult:
    """The taggers over one source: ``attributes/<tagger>/<source>/`` (no decisions yet)."""
    from olmo_assets.curation.pipeline import curate

    config = _curation_config(lab, [source])
    curate(config, lab.tagged(source), stages=("tag",))
    report = json.loads((lab.tagged(source) / "report.json").read_text())
    metadata, table = _source_counts(report, decided=False)
    taggers = sorted(p.name for p in (lab.tagged(source) / "attributes").iterdir())
    metadata["taggers"] = ", ".join(taggers)
    return StepResult(
        [lab.tagged(source)],
        metadata,
        tables={"counts": table},
        checks={"accounting": _accounting_check(report)},
    )


def deduplicate(lab: Lab) -> StepResult:
    """URL, exact, paragraph and fuzzy dedup across sources, and decontamination."""
    from olmo_assets.curation.pipeline import curate

    config = _curation_config(lab)
    curate(config, lab.dedup, stages=("dedup",))
    report = json.loads((lab.dedup / "report.json").read_text())
    metadata, table = _source_counts(report, decided=False)
    metadata["decontaminated_against"] = (
        _relative(lab, lab.eval_data) if lab.eval_data.is_dir() else "none"
    )
    return StepResult([lab.dedup], metadata, tables={"counts": table})


def mix(lab: Lab) -> StepResult:
    """Decisions, span replacement, sampling: the kept documents and the validation splits."""
    import polars as pl

    from olmo_assets.curation.pipeline import curate

    config = _curation_config(lab)
    attributes = [lab.tagged(s) for s in lab.params.sources] + [lab.dedup]
    for folder in attributes:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist: materialize it before the mix")
    curate(config, lab.curated, stages=("mix",), attributes_from=[*attributes])
    report = json.loads((lab.curated / "report.json").read_text())
    metadata, table = _source_counts(report, decided=True)
    stage_rows = [
        {"source": source, "stage": stage, "removed": number}
        for source, counts in report["sources"].items()
        for stage, number in counts["removed_by_stage"].items()
    ]
    contaminated = sum(
        counts["removed_by_stage"].get("decontamination", 0)
        for counts in report["sources"].values()
    )
    leftover = 0
    decontam = list((lab.dedup / "attributes").glob("decontam/*/*.parquet"))
    if decontam and (lab.curated / "documents").is_dir():
        kept = pl.scan_ndjson(str(lab.curated / "documents" / "**" / "*.jsonl.gz")).select("id")
        flagged = pl.scan_parquet([str(p) for p in decontam]).filter(
            pl.col("decontam__is_contaminated")
        )
        leftover = kept.join(flagged.select("id"), on="id").collect().height
    metadata["removed_as_contaminated"] = contaminated
    return StepResult(
        [lab.curated],
        metadata,
        tables={"counts": table, "removed_by_stage": _markdown_table(stage_rows)},
        checks={
            "accounting": _accounting_check(report),
            "no_contamination_left": CheckResult(
                leftover == 0,
                "no kept document is flagged as contaminated",
                {"contaminated_kept": leftover},
            ),
        },
    )


def save_tokenizer(lab: Lab) -> StepResult:
    """The tokenizer the shards are made with (``params.tokenizer``), as ``tokenizer.json``."""
    from olmo_nn.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_name_or_path(lab.params.tokenizer)
    with staged_folder(lab.tokenizer_dir) as staged:
        staged.mkdir()
        tokenizer.save(staged)
    return StepResult(
        [lab.tokenizer_dir],
        {
            "name": tokenizer.name,
            "vocab_size": tokenizer.vocab_size,
            "eos_token_id": tokenizer.eos_token_id or -1,
            "fingerprint": tokenizer.fingerprint,
        },
    )


def tokenize(lab: Lab) -> StepResult:
    """OLMo token shards of the kept documents (``train/``) and of the validation splits."""
    import numpy as np

    from olmo_nn.data import TokenShards, tokenize_documents
    from olmo_nn.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_name_or_path(lab.tokenizer_dir)
    with staged_folder(lab.shards) as staged:
        staged.mkdir()
        rows, readable, in_vocabulary = [], True, True
        for split, folder in (("train", "documents"), ("validation", "validation")):
            inputs = lab.curated / folder
            if not inputs.is_dir() or not any(inputs.rglob("*.jsonl.gz")):
                if split == "train":
                    raise ValueError(f"{inputs} holds no kept documents: nothing to train on")
                continue
            summary = tokenize_documents(
                [inputs], staged / split, tokenizer=tokenizer, workers=lab.params.curation.workers
            )
            for source, counts in sorted(summary.sources.items()):
                rows.append({"split": split, "source": source} | counts)
            shards = TokenShards(staged / split, tokenizer=tokenizer)
            for memmap in shards.memmaps:
                readable = readable and memmap.size > 0
                in_vocabulary = in_vocabulary and int(np.max(memmap)) < tokenizer.vocab_size
    train = TokenShards(lab.shards / "train")
    return StepResult(
        [lab.shards],
        {
            "tokens": train.num_tokens,
            "documents": train.num_documents,
            "tokens_per_source": {
                r["source"]: r.get("num_tokens", 0) for r in rows if r["split"] == "train"
            },
        },
        tables={"tokens": _markdown_table(rows)},
        checks={
            "shards_readable": CheckResult(
                readable and in_vocabulary,
                "every shard memory-maps and every token id is inside the vocabulary",
                {"vocab_size": tokenizer.vocab_size, "readable": readable},
            )
        },
    )


def corpus_report(lab: Lab) -> StepResult:
    """The curated corpus, WIMBD-style: DuckDB tables and plots."""
    from olmo_assets.curation.report import build_report

    with staged_folder(lab.corpus_report) as staged:
        staged.mkdir()
        tables = build_report(lab.curated, destination=staged)
    images = {p.stem: p for p in sorted(lab.corpus_report.glob("*.png"))}
    markdown = {
        name: _markdown_table(rows[:20])
        + (f"\n\n(first 20 of {len(rows)} rows: {name}.parquet)" if len(rows) > 20 else "")
        for name, rows in tables.items()
        if isinstance(rows, list) and rows and isinstance(rows[0], dict)
    }
    return StepResult([lab.corpus_report], {"tables": len(markdown)}, markdown, images)


# -- training ------------------------------------------------------------------------------------


def _train_command(lab: Lab) -> list[str]:
    params = lab.params.train
    overrides = [
        f"data.paths=[{lab.shards / 'train'}]",
        f"max_steps={params.max_steps}",
        f"global_batch_size={params.global_batch_size}",
        f"micro_batch_size={params.micro_batch_size}",
        f"save_interval_unsharded={params.checkpoint_interval}",
        f"save_interval={params.checkpoint_interval}",
        f"eval.interval={params.checkpoint_interval}",
        f"mlflow_experiment={lab.mlflow_experiment}",
        *(f"{key}={value}" for key, value in sorted(params.overrides.items())),
    ]
    if (lab.shards / "validation").is_dir():
        overrides.append(f"data.validation_paths=[{lab.shards / 'validation'}]")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={params.nproc}",
        "-m",
        "olmo_nn.cli.main",
        "train",
        str(lab.repo / params.config),
        *overrides,
        "--run-dir",
        str(lab.run_dir),
    ]


def run_process_group(command: list[str], env: dict[str, str] | None = None) -> None:
    """Run ``command`` in its own process group; SIGTERM/SIGINT here stop the whole group."""
    process = subprocess.Popen(command, start_new_session=True, env=env)

    def forward(signum: int, _frame: Any) -> None:
        os.killpg(process.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = process.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    if code != 0:
        raise subprocess.CalledProcessError(code, command)


def _manifest(shards: Path) -> str:
    path = shards / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{shards} holds no token shards: materialize token_shards first")
    return path.read_text(encoding="utf-8")


def train(lab: Lab) -> StepResult:
    """Train under ``torchrun`` (``train.nproc`` ranks); resumes from the run's checkpoints."""
    from olmo_assets.lab.tracking import experiment_id
    from olmo_nn.train.callbacks.metrics_file import read_metrics

    env = {**os.environ, "MLFLOW_TRACKING_URI": lab.mlflow_uri}
    command = _train_command(lab)
    # The run resumes from its checkpoints when it was started with this very command (an
    # interrupted run); any other parameters or inputs start it afresh.
    identity = lab.run_dir / "launch.json"
    launch = json.dumps({"command": command[1:], "shards": _manifest(lab.shards / "train")})
    if lab.run_dir.exists() and (
        not identity.is_file() or identity.read_text(encoding="utf-8") != launch
    ):
        shutil.rmtree(lab.run_dir)
    lab.run_dir.mkdir(parents=True, exist_ok=True)
    identity.write_text(launch, encoding="utf-8")
    # The experiment (and a new SQLite store's schema) is created here, by one process,
    # before the trainer and the evaluation steps write to it.
    experiment_id(lab)
    run_process_group(command, env)
    metrics = read_metrics(lab.run_dir)
    losses = [m["loss"] for m in metrics if "loss" in m]
    finite = all(math.isfinite(x) for x in losses)
    checkpoints = sorted(p.name for p in (lab.run_dir / "checkpoints").glob("*-unsharded"))
    run_id_file = lab.run_dir / "mlflow_run_id"
    metadata: dict[str, Any] = {
        "steps": len(losses),
        "first_loss": losses[0] if losses else float("nan"),
        "last_loss": losses[-1] if losses else float("nan"),
        "checkpoints": ", ".join(checkpoints),
        "mlflow_run_id": run_id_file.read_text().strip() if run_id_file.is_file() else "",
    }
    images = {"loss": lab.run_dir / "loss.png"} if (lab.run_dir / "loss.png").is_file() else {}
    return StepResult(
        [lab.run_dir],
        metadata,
        images=images,
        checks={
            "losses_finite": CheckResult(
                finite and bool(losses), "every logged loss is finite", {"steps": len(losses)}
            )
        },
    )


# -- evaluation ----------------------------------------------------------------------------------


def _relative(lab: Lab, path: Path) -> str:
    """Paths inside results are relative to the repository, so results hash the same anywhere."""
    return path.resolve().relative_to(lab.repo).as_posix()


def _checkpoint(lab: Lab, step: int) -> Path:
    path = lab.checkpoint(step)
    if not path.is_dir():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist: train past step {step} first, and keep "
            f"eval.checkpoints in params.yaml to multiples of train.checkpoint_interval"
        )
    return path


def record_checkpoint(lab: Lab, step: int) -> StepResult:
    """One kept checkpoint: verified loadable; its content hash, tokens seen and parameters."""
    import olmo_nn
    from olmo_nn.train.callbacks.mlflow_logger import content_hash

    checkpoint = _checkpoint(lab, int(step))
    model = olmo_nn.load_model(checkpoint)
    state = json.loads((checkpoint / "train_state.json").read_text(encoding="utf-8"))
    record = {
        "step": int(step),
        "checkpoint_path": _relative(lab, checkpoint),
        "sha256": content_hash(checkpoint),
        "parameters": model.num_params(),
        "tokens_seen": state["tokens_seen"],
        "epoch": state["epoch"],
    }
    target = lab.checkpoint_record(int(step))
    with staged_folder(target) as staged:
        staged.mkdir()
        (staged / "checkpoint.json").write_text(
            json.dumps(record, indent=1) + "\n", encoding="utf-8"
        )
    return StepResult([target], record)


def evaluate_downstream(lab: Lab, step: int, task: str) -> StepResult:
    """One task on one checkpoint (rank classification, OLMo's normalization for the task)."""
    from olmo_assets.lab.tracking import EvaluationRun, log_evaluation
    from olmo_nn.eval.downstream import evaluate_task, write_results
    from olmo_nn.eval.models import load_language_model
    from olmo_nn.eval.scoring import NORMALIZATIONS
    from olmo_nn.eval.tasks import get_task_spec, load_task

    checkpoint = _checkpoint(lab, int(step))
    model = load_language_model(checkpoint)
    instances = load_task(task, limit=lab.params.eval.limit)
    spec = get_task_spec(task)
    normalization = spec.default_normalization
    result = evaluate_task(
        model,
        spec.name,
        instances,
        default_normalization=normalization,
        unconditional_context=spec.unconditional_context,
    )
    target = lab.downstream(int(step), task)
    with staged_folder(target) as staged:
        staged.mkdir()
        rows = write_results(
            [result], staged, model=_relative(lab, checkpoint), step=int(step), dump_requests=False
        )
    acc = next((r["value"] for r in rows if r["metric"] == "acc"), float("nan"))
    expected = {"acc", *(f"acc_{n}" for n in NORMALIZATIONS)}
    metrics = {r["metric"]: r for r in rows}
    complete = expected <= set(metrics) and all(
        math.isfinite(metrics[m]["value"]) and metrics[m]["count"] == len(instances)
        for m in expected
    )
    run_id = log_evaluation(
        lab,
        EvaluationRun.of_checkpoint(
            "downstream",
            int(step),
            task,
            checkpoint,
            target / "results.json",
            params={
                "task": task,
                "limit": lab.params.eval.limit,
                "normalization": normalization,
                "examples": len(instances),
            },
            metrics={r["metric"]: r["value"] for r in rows},
            tags={"olmo.task": task},
        ),
    )
    return StepResult(
        [target],
        {
            "acc": acc,
            "examples": len(instances),
            "step": int(step),
            "task": task,
            "mlflow_run_id": run_id,
        },
        tables={"results": _markdown_table(rows, ["metric", "value", "count"])},
        checks={
            "rows_complete": CheckResult(
                complete, "the result rows hold every metric, none missing", {"rows": len(rows)}
            )
        },
    )


def _metric_path(row: dict[str, Any]) -> tuple[str, str | None, str]:
    """``source``, ``domain``, ``metric`` of a perplexity row: ``prose/bits_per_byte`` in MLflow."""
    return row["source"], row.get("domain"), row["metric"]


def evaluate_perplexity_step(lab: Lab, step: int) -> StepResult:
    """Paloma-style perplexity and bits per byte per source on the validation splits."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from olmo_assets.lab.tracking import EvaluationRun, log_evaluation
    from olmo_nn.data import read_documents
    from olmo_nn.eval.models import load_language_model
    from olmo_nn.eval.perplexity import evaluate_perplexity

    checkpoint = _checkpoint(lab, int(step))
    model = load_language_model(checkpoint)
    folder = lab.curated / "validation"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist: the mix wrote no validation split")
    per_source: dict[str, int] = {}
    documents = []
    for doc in read_documents([folder]):
        if per_source.get(doc.source, 0) >= lab.params.eval.perplexity_documents:
            continue
        per_source[doc.source] = per_source.get(doc.source, 0) + 1
        documents.append(
            {"id": doc.id, "text": doc.text, "source": doc.source, "metadata": doc.metadata or {}}
        )
    rows = evaluate_perplexity(model, documents)
    rows = [{"model": _relative(lab, checkpoint), "step": int(step), **row} for row in rows]
    target = lab.perplexity(int(step))
    with staged_folder(target) as staged:
        staged.mkdir()
        (staged / "results.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        pq.write_table(pa.Table.from_pylist(rows), staged / "results.parquet")
    summary = {
        f"{r['source']}/{r['metric']}": r["value"]
        for r in rows
        if r["metric"] in ("perplexity", "bits_per_byte")
    }
    finite = all(math.isfinite(r["value"]) for r in rows)
    run_id = log_evaluation(
        lab,
        EvaluationRun.of_checkpoint(
            "perplexity",
            int(step),
            "",
            checkpoint,
            target / "results.json",
            params={
                "documents_per_source": lab.params.eval.perplexity_documents,
                "sources": ",".join(sorted(per_source)),
            },
            metrics={"/".join(filter(None, _metric_path(r))): r["value"] for r in rows},
        ),
    )
    return StepResult(
        [target],
        {"documents": len(documents), **summary, "mlflow_run_id": run_id},
        tables={
            "results": _markdown_table(
                [r for r in rows if r["metric"] in ("perplexity", "bits_per_byte")],
                ["source", "metric", "value", "count"],
            )
        },
        checks={
            "rows_complete": CheckResult(
                finite and bool(rows),
                "one finite row per source and metric",
                {"rows": len(rows)},
            )
        },
    )


# -- reports -------------------------------------------------------------------------------------


def model_report(lab: Lab) -> StepResult:
    """Loss and evaluation scores by checkpoint: ``metrics.json``, CSVs, a table, plots."""
    from olmo_assets.lab.report import (
        collect_model_report,
        markdown_eval_table,
        write_model_report,
    )
    from olmo_assets.lab.tracking import log_report

    report = collect_model_report(lab)
    with staged_folder(lab.model_report) as staged:
        staged.mkdir()
        write_model_report(report, staged)
    run_id = log_report(lab, lab.model_report)
    expected = len(report.checkpoints) * (len(report.tasks) + 1)
    return StepResult(
        [lab.model_report],
        {
            "steps": len(report.losses),
            "final_loss": report.losses[max(report.losses)] if report.losses else math.nan,
            "results": len(report.accuracy) + len({s for s, _ in report.perplexity}),
            "expected_results": expected,
            "final_mean_acc": report.mean_accuracy(max(report.checkpoints, default=0)),
            "mlflow_run_id": run_id or "",
        },
        tables={"evaluation": markdown_eval_table(report)},
        images={p.stem: p for p in sorted(lab.model_report.glob("*.png"))},
        checks={
            "rows_complete": CheckResult(
                not report.missing,
                "every checkpoint of eval.checkpoints has a result for every task of "
                "eval.tasks, and perplexity",
                {"missing": ", ".join(report.missing) or "none", "expected": expected},
            )
        },
    )


STEPS: dict[str, Step] = {
    step.name: step
    for step in (
        Step("source", build_source, ("sources",), ("source",)),
        Step("eval_data", build_eval_data, ("eval",)),
        Step("tag", tag_source, ("sources", "curation"), ("source",)),
        Step("dedup", deduplicate, ("sources", "curation")),
        Step("mix", mix, ("sources", "curation")),
        Step("tokenizer", save_tokenizer, ("tokenizer",)),
        Step("tokenize", tokenize, ("curation",)),
        Step("corpus_report", corpus_report, ()),
        Step("train", train, ("train",)),
        Step("checkpoint", record_checkpoint, ("train",), ("step",)),
        Step("downstream", evaluate_downstream, ("eval",), ("step", "task")),
        Step("perplexity", evaluate_perplexity_step, ("eval",), ("step",)),
        Step("model_report", model_report, ("eval",)),
    )
}


def run_step(lab: Lab, name: str, *arguments: str) -> StepResult:
    """Run step ``name`` with its arguments (as given on a command line)."""
    if name not in STEPS:
        raise KeyError(f"unknown step {name!r}; steps are {', '.join(STEPS)}")
    step = STEPS[name]
    if len(arguments) != len(step.arguments):
        raise ValueError(
            f"step {name!r} takes {len(step.arguments)} argument(s) "
            f"({', '.join(step.arguments) or 'none'}), got {list(arguments)}"
        )
    converted = [int(a) if kind == "step" else a for kind, a in zip(step.arguments, arguments, strict=True)]  # fmt: skip
    return step.run(lab, *converted)
