"""Evaluation steps: a downstream task on a checkpoint, perplexity on a checkpoint; checks.

Their metadata states a score with what it takes to read it: an accuracy with its standard
error, the chance level, the number of examples and the normalization ``acc`` uses; the
offline perplexity beside the trainer's in-loop validation loss at the same step, and why the
two differ. Floats are kept to what makes sense as a line over an asset's partitions (a
downstream partition is a checkpoint × task: one accuracy line across tasks would zig-zag, so
the accuracy is text there).
"""

from __future__ import annotations

import json
import math
import time
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


def _task_instances(lab: Lab, key: str) -> list[Any]:
    """The examples of the task whose partition key is ``key`` (``arc_easy-mc``): ranked
    choices, or prompts for a generative task."""
    from olmo_nn.eval.formats import task_of_partition
    from olmo_nn.eval.generative import generative_spec, load_generative_task
    from olmo_nn.eval.tasks import load_task

    task = task_of_partition(key)
    if generative_spec(task) is not None:
        return load_generative_task(task, limit=lab.params.eval.limit)
    return load_task(task, limit=lab.params.eval.limit)


def evaluate_downstream(lab: Lab, step: int, task: str) -> StepResult:
    """One task (its partition key, ``arc_easy-mc``) on one checkpoint: rank classification
    under OLMo's normalization for the task, or greedy generation for a generative task
    (nq_open, triviaqa, basic_arithmetic), scored by the task's main metric."""
    from olmo_assets.lab.tracking import EvaluationRun, downstream_key, log_evaluation
    from olmo_nn.eval.downstream import evaluate_spec, write_results
    from olmo_nn.eval.formats import task_of_partition
    from olmo_nn.eval.generative import evaluate_generative_task, generative_spec
    from olmo_nn.eval.models import load_language_model
    from olmo_nn.eval.tasks import get_task_spec, primary_metric

    started_ms = int(time.time() * 1000)
    checkpoint, sha256 = recorded_checkpoint(lab, step)
    instances = _task_instances(lab, task)
    name = task_of_partition(task)
    metric = primary_metric(name)
    model = load_language_model(checkpoint)
    result: Any  # TaskResult or GenerationResult: both give write_results its rows
    normalization: str | None = None
    if generative_spec(name) is not None:
        result = evaluate_generative_task(model, name, instances)
    else:
        spec = get_task_spec(name)
        normalization = spec.default_normalization
        result = evaluate_spec(model, spec, instances)
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
                "metric": metric,
                **({"normalization": normalization} if normalization else {}),
                "examples": len(instances),
            },
            metrics={downstream_key(task, r["metric"]): r["value"] for r in rows},
            training_metrics={
                downstream_key(task, r["metric"]): r["value"]
                for r in rows
                if r["metric"] in (metric, f"{metric}_stderr")
            },
            started_ms=started_ms,
            tags={"olmo.task": task},
        ),
    )
    values = {r["metric"]: r["value"] for r in rows}
    score = values.get(metric, math.nan), values.get(f"{metric}_stderr", math.nan)
    described: dict[str, Any] = (
        {"score": score_text(metric, *score, len(instances))}
        if normalization is None
        else {
            "accuracy": accuracy_text(*score, values.get("chance", math.nan), len(instances)),
            "normalization": normalization,
        }
    )
    return StepResult(
        {
            **described,
            "examples": len(instances),
            # Text: across this asset's partitions (checkpoint × task) a number would be
            # plotted as one zig-zagging series.
            "step": str(step),
            "task": task,
            "mlflow_run_id": run_id,
        },
        {"results": [{k: r[k] for k in ("metric", "value", "count")} for r in rows]},
    )


def score_text(metric: str, value: float, stderr: float, examples: int) -> str:
    """``f1 0.312 ± 0.061 (40 examples)``: a generative task's main score as it should be
    read (it has no chance level)."""
    return f"{metric} {value:.3f} ± {stderr:.3f} ({examples} examples)"


def accuracy_text(acc: float, stderr: float, chance: float, examples: int) -> str:
    """``0.425 ± 0.078 (chance 0.25, 40 examples)``: an accuracy as it should be read."""
    return f"{acc:.3f} ± {stderr:.3f} (chance {chance:.3g}, {examples} examples)"


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

    from olmo_assets.lab.tracking import EvaluationRun, log_evaluation, perplexity_key
    from olmo_nn.eval.models import load_language_model
    from olmo_nn.eval.perplexity import evaluate_perplexity as score

    started_ms = int(time.time() * 1000)
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
    headline = [
        r for r in rows if r["metric"] in ("perplexity", "bits_per_byte") and not r.get("domain")
    ]
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
                perplexity_key(r["source"], r["metric"], r.get("domain")): r["value"] for r in rows
            },
            training_metrics={
                perplexity_key(r["source"], r["metric"]): r["value"] for r in headline
            },
            started_ms=started_ms,
        ),
    )
    return StepResult(
        {
            "documents": len(documents),
            **{f"{r['source']}/{r['metric']}": r["value"] for r in headline},
            **_in_loop_validation(lab, step),
            "mlflow_run_id": run_id,
        },
        {
            "results": [
                {k: r.get(k) for k in ("source", "metric", "value", "count")} for r in headline
            ]
        },
    )


IN_LOOP_VS_OFFLINE = (
    "In-loop (the trainer's eval/loss, every eval.interval steps): mean cross-entropy in nats "
    "per token over the first eval.max_batches batches of the validation token shards, in "
    "file order (so the sources that come first there): every source's documents "
    "concatenated and cut into fixed-length instances, so a document may start mid-instance "
    "after another and lose its context at a cut. Offline (this step, Paloma-style): up to "
    "eval.perplexity_documents documents per source from the validation splits, each scored "
    "on its own from its start (after an EOS) in windows of the model's length; perplexity = "
    "exp(nats per token), and bits per byte, per source, 'all' pooling every scored "
    "document. Different documents, mix of sources and context: the two are not expected to "
    "agree."
)


def _in_loop_validation(lab: Lab, step: int) -> dict[str, Any]:
    """The trainer's in-loop validation loss at ``step`` beside the offline numbers."""
    from olmo_nn.train.callbacks.metrics_file import read_metrics

    losses = {
        int(r["step"]): float(r["eval/loss"]) for r in read_metrics(lab.run_dir) if "eval/loss" in r
    }
    if step not in losses:
        return {
            "in_loop_eval_loss": None,
            "in_loop_eval_note": f"not computed at step {step} (the trainer's eval.interval)",
            "in_loop_vs_offline": IN_LOOP_VS_OFFLINE,
        }
    return {
        "in_loop_eval_loss": losses[step],
        "in_loop_eval_perplexity": math.exp(min(losses[step], 50.0)),
        "in_loop_vs_offline": IN_LOOP_VS_OFFLINE,
    }


# -- checks: read back from results.json ---------------------------------------------------------


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _rows(folder: Path) -> list[dict[str, Any]]:
    path = folder / "results.json"
    rows: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return rows


def downstream_rows_complete(lab: Lab, step: int, task: str) -> CheckResult:
    """Every normalization's accuracy and ``acc`` itself, each with its standard error, and
    the chance level (a generative task: its exact match and main metric, each with its
    standard error): finite, over every example (a standard error needs two)."""
    from olmo_nn.eval.formats import task_of_partition
    from olmo_nn.eval.generative import generative_spec
    from olmo_nn.eval.scoring import NORMALIZATIONS
    from olmo_nn.eval.tasks import primary_metric

    name = task_of_partition(task)
    if generative_spec(name) is not None:
        scores = {"exact_match", primary_metric(name)}
        errors = {f"{m}_stderr" for m in scores}
        expected = scores | errors
    else:
        accuracies = {"acc", *(f"acc_{n}" for n in NORMALIZATIONS)}
        errors = {f"{m}_stderr" for m in accuracies}
        expected = accuracies | errors | {"chance"}
    examples = len(_task_instances(lab, task))
    rows = {r["metric"]: r for r in _rows(lab.downstream(step, task))}
    missing = sorted(expected - set(rows))
    must_be_finite = expected if examples >= 2 else expected - errors
    wrong = sorted(
        m
        for m in expected & set(rows)
        if rows[m]["count"] != examples or (m in must_be_finite and not _finite(rows[m]["value"]))
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
