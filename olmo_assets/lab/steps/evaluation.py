"""Evaluation steps: a downstream task on a checkpoint, perplexity on a checkpoint; checks."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from olmo_assets.lab.params import Lab
from olmo_assets.lab.steps.checkpoints import recorded_checkpoint
from olmo_assets.lab.steps.results import CheckResult, StepResult, relative
from olmo_nn.atomic import staged_folder

__all__ = [
    "downstream_rows_complete",
    "evaluate_downstream",
    "evaluate_perplexity",
    "perplexity_rows_complete",
]


def _task_instances(lab: Lab, task: str) -> list[Any]:
    from olmo_nn.eval.tasks import load_task

    return load_task(task, limit=lab.params.eval.limit)


def evaluate_downstream(lab: Lab, step: int, task: str) -> StepResult:
    """One task on one checkpoint (rank classification, OLMo's normalization for the task)."""
    from olmo_assets.lab.tracking import EvaluationRun, log_evaluation
    from olmo_nn.eval.downstream import evaluate_task, write_results
    from olmo_nn.eval.models import load_language_model
    from olmo_nn.eval.tasks import get_task_spec

    checkpoint, sha256 = recorded_checkpoint(lab, step)
    instances = _task_instances(lab, task)
    spec = get_task_spec(task)
    result = evaluate_task(
        load_language_model(checkpoint),
        spec.name,
        instances,
        default_normalization=spec.default_normalization,
        unconditional_context=spec.unconditional_context,
    )
    target = lab.downstream(step, task)
    with staged_folder(target) as staged:
        staged.mkdir()
        rows = write_results(
            [result], staged, model=relative(lab, checkpoint), step=step, dump_requests=False
        )
    run_id = log_evaluation(
        lab,
        EvaluationRun.of_checkpoint(
            "downstream",
            step,
            task,
            checkpoint,
            sha256,
            target / "results.json",
            params={
                "task": task,
                "limit": lab.params.eval.limit,
                "normalization": spec.default_normalization,
                "examples": len(instances),
            },
            metrics={r["metric"]: r["value"] for r in rows},
            tags={"olmo.task": task},
        ),
    )
    acc = next((r["value"] for r in rows if r["metric"] == "acc"), math.nan)
    return StepResult(
        {
            "acc": acc,
            "examples": len(instances),
            "step": step,
            "task": task,
            "mlflow_run_id": run_id,
        },
        {"results": [{k: r[k] for k in ("metric", "value", "count")} for r in rows]},
    )


def _validation_documents(lab: Lab) -> list[dict[str, Any]]:
    """Up to ``eval.perplexity_documents`` validation documents per source, in file order."""
    from olmo_nn.data import read_documents

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
    return documents


def evaluate_perplexity(lab: Lab, step: int) -> StepResult:
    """Paloma-style perplexity and bits per byte per source on the validation splits."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from olmo_assets.lab.tracking import EvaluationRun, log_evaluation
    from olmo_nn.eval.models import load_language_model
    from olmo_nn.eval.perplexity import evaluate_perplexity as score

    checkpoint, sha256 = recorded_checkpoint(lab, step)
    documents = _validation_documents(lab)
    rows = [
        {"model": relative(lab, checkpoint), "step": step, **row}
        for row in score(load_language_model(checkpoint), documents)
    ]
    target = lab.perplexity(step)
    with staged_folder(target) as staged:
        staged.mkdir()
        (staged / "results.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        pq.write_table(pa.Table.from_pylist(rows), staged / "results.parquet")
    sources = sorted({d["source"] for d in documents})
    run_id = log_evaluation(
        lab,
        EvaluationRun.of_checkpoint(
            "perplexity",
            step,
            "",
            checkpoint,
            sha256,
            target / "results.json",
            params={
                "documents_per_source": lab.params.eval.perplexity_documents,
                "sources": ",".join(sources),
            },
            metrics={
                "/".join(filter(None, (r["source"], r.get("domain"), r["metric"]))): r["value"]
                for r in rows
            },
        ),
    )
    headline = [r for r in rows if r["metric"] in ("perplexity", "bits_per_byte")]
    return StepResult(
        {
            "documents": len(documents),
            **{f"{r['source']}/{r['metric']}": r["value"] for r in headline},
            "mlflow_run_id": run_id,
        },
        {
            "results": [
                {k: r.get(k) for k in ("source", "metric", "value", "count")} for r in headline
            ]
        },
    )


# -- checks: read back from results.json ---------------------------------------------------------


def _rows(folder: Path) -> list[dict[str, Any]]:
    path = folder / "results.json"
    rows: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return rows


def downstream_rows_complete(lab: Lab, step: int, task: str) -> CheckResult:
    """Every normalization's accuracy and ``acc`` itself, finite, over every example."""
    from olmo_nn.eval.scoring import NORMALIZATIONS

    expected = {"acc", *(f"acc_{n}" for n in NORMALIZATIONS)}
    examples = len(_task_instances(lab, task))
    rows = {r["metric"]: r for r in _rows(lab.downstream(step, task))}
    missing = sorted(expected - set(rows))
    wrong = sorted(
        m
        for m in expected & set(rows)
        if not math.isfinite(rows[m]["value"]) or rows[m]["count"] != examples
    )
    return CheckResult(
        not missing and not wrong,
        {
            "examples": examples,
            "missing": ", ".join(missing) or "none",
            "not_finite_or_incomplete": ", ".join(wrong) or "none",
        },
    )


def perplexity_rows_complete(lab: Lab, step: int) -> CheckResult:
    """A finite perplexity and bits per byte for every source with validation documents."""
    sources = {d["source"] for d in _validation_documents(lab)}
    rows = _rows(lab.perplexity(step))
    found = {(r["source"], r["metric"]) for r in rows if r.get("domain") is None}
    missing = sorted(
        f"{s}/{m}" for s in sources for m in ("perplexity", "bits_per_byte") if (s, m) not in found
    )
    not_finite = sorted(
        f"{r['source']}/{r['metric']}" for r in rows if not math.isfinite(r["value"])
    )
    return CheckResult(
        bool(rows) and not missing and not not_finite,
        {
            "rows": len(rows),
            "missing": ", ".join(missing) or "none",
            "not_finite": ", ".join(not_finite) or "none",
        },
    )
