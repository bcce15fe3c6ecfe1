"""Downstream evaluation: rank classification over the tasks, under the normalizations asked for.

For every choice of every instance the log-likelihood of its continuation given its context is
scored once, all in one :func:`score_requests` call, so the choices of an instance share their
context's forward pass. Accuracy is then computed under the normalizations asked for (none /
per-token / per-character / unconditional); the first three come free from the same scores,
while ``unconditional`` needs a second set of requests, the continuation given the task's
unconditional context (``"Answer:"``), which are scored (in the same call) only when it is
asked for. ``acc`` is the task's default as OLMo chose it, reported when it was scored.

Each accuracy comes with its standard error as lm-evaluation-harness defines it (the sample
standard deviation of the 0/1 scores, with n - 1, over sqrt(n): sqrt(p(1 - p) / (n - 1))),
and the task with its chance level (the mean over examples of 1 / number of choices): on a
few dozen examples the difference between two checkpoints is often within the noise.

A task that OLMo reports by F1 (``metric_type="f1"``: MRPC; ``TaskSpec.f1_positive``) also
gets ``f1`` (:func:`f1_score`) of the predictions under its default normalization, beside
``acc``; it has no standard error (OLMo reports none).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from olmo_nn.eval.mmlu import aggregate_rows
from olmo_nn.eval.scoring import (
    NORMALIZATIONS,
    UNCONDITIONAL_CONTEXT,
    Convention,
    Request,
    normalize,
    score_requests,
    unconditional_requests,
)
from olmo_nn.eval.suites import suite_rows
from olmo_nn.eval.task_spec import TaskSpec

__all__ = [
    "FREE_NORMALIZATIONS",
    "NORMALIZATIONS",
    "TaskResult",
    "accuracy_stderr",
    "evaluate_spec",
    "evaluate_task",
    "f1_score",
    "resolve_normalizations",
    "write_results",
]

FREE_NORMALIZATIONS: tuple[str, ...] = ("none", "per_token", "per_char")
"""The normalizations computed from the requests' own scores (``unconditional`` needs more)."""


def resolve_normalizations(spec: str | Sequence[str], default_normalization: str) -> list[str]:
    """The normalizations to compute for a task whose default is ``default_normalization``.

    ``"default"``: the task's default plus the free ones (:data:`FREE_NORMALIZATIONS`), so the
    unconditional requests are scored only for tasks that report them (ARC, OpenBookQA);
    ``"all"``: all four; else a comma-separated list (or a sequence) of names, exactly those.
    """
    names = [spec] if isinstance(spec, str) else list(spec)
    parts = [part.strip() for name in names for part in name.split(",") if part.strip()]
    if parts == ["all"]:
        return list(NORMALIZATIONS)
    if parts == ["default"]:
        wanted = {*FREE_NORMALIZATIONS, default_normalization}
        return [kind for kind in NORMALIZATIONS if kind in wanted]
    unknown = [part for part in parts if part not in NORMALIZATIONS]
    if unknown or not parts:
        raise ValueError(
            f"normalizations={spec!r}: expected 'default', 'all' or a comma-separated list of "
            f"{', '.join(NORMALIZATIONS)}"
        )
    return [kind for kind in NORMALIZATIONS if kind in parts]


def accuracy_stderr(correct: Sequence[bool]) -> float:
    """The standard error of a mean of 0/1 scores, as lm-evaluation-harness computes it:
    ``sample_stddev / sqrt(n)`` with the n - 1 sample deviation. NaN under two examples."""
    n = len(correct)
    if n < 2:
        return math.nan
    p = sum(correct) / n
    return math.sqrt(p * (1.0 - p) / (n - 1))


def f1_score(labels: Sequence[int], predictions: Sequence[int], positive: int) -> float:
    """F1 of the ``positive`` choice against the others, as OLMo scores MRPC.

    ``2 TP / (2 TP + FP + FN)``; 0.0 when neither the labels nor the predictions hold a positive
    (precision and recall undefined). This is ``olmo_eval.metrics.ICLMetric.custom_f1_score``
    (ai2-olmo-eval 0.9.0; it returns 0.0 as soon as precision or recall is undefined, which
    the formula gives too) and scikit-learn's ``f1_score(labels, predictions,
    pos_label=positive, zero_division=0)``, what OLMo's ``olmo/eval/downstream.py`` calls
    (its default ``zero_division="warn"`` also gives 0.0)."""
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    pairs = list(zip(labels, predictions, strict=True))
    true_positives = sum(1 for label, pred in pairs if label == positive and pred == positive)
    false_positives = sum(1 for label, pred in pairs if label != positive and pred == positive)
    false_negatives = sum(1 for label, pred in pairs if label == positive and pred != positive)
    denominator = 2 * true_positives + false_positives + false_negatives
    return 2 * true_positives / denominator if denominator else 0.0


@dataclass
class TaskResult:
    """Accuracy of one task under each normalization, and every request's scores."""

    task: str
    default_normalization: str
    accuracy: dict[str, float]
    count: int
    requests: list[dict[str, Any]]
    stderr: dict[str, float]
    """The standard error of each normalization's accuracy (:func:`accuracy_stderr`)."""
    chance: float
    """The accuracy of guessing: the mean over examples of 1 / number of choices."""
    f1: float | None = None
    """F1 of the task's positive choice under the default normalization (:func:`f1_score`),
    for a task OLMo reports by F1 (MRPC) when the default was computed; else ``None``."""

    def rows(self, *, model: str, step: int | None) -> list[dict[str, Any]]:
        """``acc_<normalization>`` and ``acc_<normalization>_stderr`` for each normalization
        computed, ``acc`` and ``acc_stderr`` (the default's, when it was computed), ``f1``
        (where computed), ``chance`` and ``truncated_requests``."""
        base = {"model": model, "step": step, "task": self.task, "count": self.count}
        rows = []
        for kind, value in self.accuracy.items():
            rows.append({**base, "metric": f"acc_{kind}", "value": value})
            rows.append({**base, "metric": f"acc_{kind}_stderr", "value": self.stderr[kind]})
        default = self.default_normalization
        if default in self.accuracy:
            rows.append({**base, "metric": "acc", "value": self.accuracy[default]})
            rows.append({**base, "metric": "acc_stderr", "value": self.stderr[default]})
        if self.f1 is not None:
            rows.append({**base, "metric": "f1", "value": self.f1})
        rows.append({**base, "metric": "chance", "value": self.chance})
        truncated = sum(1 for r in self.requests if r["truncated"])
        rows.append({**base, "metric": "truncated_requests", "value": float(truncated)})
        return rows


def evaluate_task(
    model: Any,
    task: str,
    instances: Sequence[Any],
    *,
    default_normalization: str,
    convention: Convention = "separate",
    batch_size: int = 32,
    unconditional_context: str = UNCONDITIONAL_CONTEXT,
    normalizations: str | Sequence[str] = "all",
    f1_positive: int | None = None,
) -> TaskResult:
    """Score every choice of ``instances`` (``contexts``/``continuations``/``label``).

    ``normalizations`` (see :func:`resolve_normalizations`; all four by default) are the
    accuracies computed. The ``unconditional`` normalization subtracts
    log P(continuation | unconditional_context) (the task's ``TaskSpec.unconditional_context``);
    those requests are scored only when it is asked for. ``f1_positive`` (the task's
    ``TaskSpec.f1_positive``) adds the F1 of that choice under the default normalization,
    when it is computed. A log-likelihood that is NaN or
    infinite (corrupted or diverged weights) is an error naming the model, never an accuracy.
    """
    if default_normalization not in NORMALIZATIONS:
        raise ValueError(
            f"default_normalization={default_normalization!r}: expected one of {NORMALIZATIONS}"
        )
    kinds = resolve_normalizations(normalizations, default_normalization)
    requests: list[Request] = []
    owners: list[tuple[int, int]] = []
    for i, instance in enumerate(instances):
        choices = max(len(instance.contexts), len(instance.continuations))
        for j in range(choices):
            context = instance.contexts[j] if len(instance.contexts) > 1 else instance.contexts[0]
            continuation = (
                instance.continuations[j]
                if len(instance.continuations) > 1
                else instance.continuations[0]
            )
            requests.append(Request(context=context, continuation=continuation))
            owners.append((i, j))
    # One call: the unconditional requests (all one context) pack densely beside the others.
    extra = (
        unconditional_requests(requests, unconditional_context) if "unconditional" in kinds else []
    )
    both = score_requests(model, requests + extra, convention=convention, batch_size=batch_size)
    bad = sum(1 for score in both if not math.isfinite(score.logprob_sum))
    if bad:
        raise ValueError(
            f"{getattr(model, 'name', model)}: {bad} of {len(both)} log-likelihoods on task "
            f"{task} are not finite (NaN or infinite): its weights are corrupted or diverged; "
            "no accuracy is reported"
        )
    scores, baseline = both[: len(requests)], both[len(requests) :]
    normalized = {
        kind: normalize(scores, kind, unconditional=baseline or None)  # type: ignore[arg-type]
        for kind in kinds
    }
    accuracy, stderr = {}, {}
    labels = [instance.label for instance in instances]
    predictions: dict[str, list[int]] = {}
    for kind, values in normalized.items():
        best: dict[int, tuple[float, int]] = {}
        for (i, j), value in zip(owners, values, strict=True):
            if i not in best or value > best[i][0]:
                best[i] = (value, j)
        predictions[kind] = [best[i][1] for i in range(len(instances))]
        correct = [pred == label for pred, label in zip(predictions[kind], labels, strict=True)]
        accuracy[kind] = float(np.mean(correct)) if correct else float("nan")
        stderr[kind] = accuracy_stderr(correct)
    f1 = None
    if f1_positive is not None and default_normalization in predictions:
        f1 = (
            f1_score(labels, predictions[default_normalization], f1_positive)
            if labels
            else math.nan
        )
    num_choices = Counter(i for i, _ in owners)
    chance = (
        float(np.mean([1.0 / num_choices[i] for i in range(len(instances))]))
        if instances
        else float("nan")
    )
    dumped = [
        {
            "task": task,
            "doc_id": instances[i].doc_id,
            "choice": j,
            "label": instances[i].label,
            "context": request.context,
            "continuation": request.continuation,
            "logprob": score.logprob_sum,
            "num_tokens": score.num_tokens,
            "num_chars": score.num_chars,
            "unconditional_logprob": baseline[k].logprob_sum if baseline else None,
            "truncated": score.truncated,
        }
        for k, ((i, j), request, score) in enumerate(zip(owners, requests, scores, strict=True))
    ]
    return TaskResult(
        task,
        default_normalization,
        accuracy,
        len(instances),
        dumped,
        stderr=stderr,
        chance=chance,
        f1=f1,
    )


def evaluate_spec(
    model: Any, spec: TaskSpec, instances: Sequence[Any], **options: Any
) -> TaskResult:
    """:func:`evaluate_task` with the task's own settings from its ``spec``: its default
    normalization, unconditional context and F1 class; ``options`` are the rest (``convention``,
    ``batch_size``, ``normalizations``)."""
    return evaluate_task(
        model,
        spec.name,
        instances,
        default_normalization=spec.default_normalization,
        unconditional_context=spec.unconditional_context,
        f1_positive=spec.f1_positive,
        **options,
    )


def write_results(
    results: list[TaskResult],
    output: Path,
    *,
    model: str,
    step: int | None,
    dump_requests: bool,
    suites: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """``results.json``, ``results.parquet`` and, when asked, ``requests.jsonl`` in ``output``.

    The rows are each task's (:meth:`TaskResult.rows`), then MMLU's averages over the
    subjects among them (:func:`olmo_nn.eval.mmlu.aggregate_rows`), then the score of each
    of ``suites`` (:func:`olmo_nn.eval.suites.suite_rows`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    output.mkdir(parents=True, exist_ok=True)
    rows = [row for result in results for row in result.rows(model=model, step=step)]
    rows += aggregate_rows(rows)
    rows += suite_rows(rows, suites)
    (output / "results.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows), output / "results.parquet")
    if dump_requests:
        with (output / "requests.jsonl").open("w", encoding="utf-8") as out:
            for result in results:
                for record in result.requests:
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return rows
