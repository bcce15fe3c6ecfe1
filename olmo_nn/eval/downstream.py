"""Downstream evaluation: rank classification over the tasks, all four normalizations at once.

For every choice of every instance the log-likelihood of its continuation given its context is
scored once (plus the continuation given the task's unconditional context, ``"Answer:"``, for
the unconditional normalization), all in one :func:`score_requests` call, so the choices of an
instance share their context's forward pass;
accuracy is then computed under none / per-token / per-character / unconditional, and ``acc``
is the task's default as OLMo chose it.

Each accuracy comes with its standard error as lm-evaluation-harness defines it (the sample
standard deviation of the 0/1 scores, with n - 1, over sqrt(n): sqrt(p(1 - p) / (n - 1))),
and the task with its chance level (the mean over examples of 1 / number of choices): on a
few dozen examples the difference between two checkpoints is often within the noise.
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

from olmo_nn.eval.scoring import (
    NORMALIZATIONS,
    UNCONDITIONAL_CONTEXT,
    Convention,
    Request,
    normalize,
    score_requests,
    unconditional_requests,
)

__all__ = ["NORMALIZATIONS", "TaskResult", "accuracy_stderr", "evaluate_task", "write_results"]


def accuracy_stderr(correct: Sequence[bool]) -> float:
    """The standard error of a mean of 0/1 scores, as lm-evaluation-harness computes it:
    ``sample_stddev / sqrt(n)`` with the n - 1 sample deviation. NaN under two examples."""
    n = len(correct)
    if n < 2:
        return math.nan
    p = sum(correct) / n
    return math.sqrt(p * (1.0 - p) / (n - 1))


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

    def rows(self, *, model: str, step: int | None) -> list[dict[str, Any]]:
        """``acc_<normalization>`` and ``acc_<normalization>_stderr`` for each normalization,
        ``acc`` and ``acc_stderr`` (the default's), ``chance`` and ``truncated_requests``."""
        base = {"model": model, "step": step, "task": self.task, "count": self.count}
        rows = []
        for kind, value in self.accuracy.items():
            rows.append({**base, "metric": f"acc_{kind}", "value": value})
            rows.append({**base, "metric": f"acc_{kind}_stderr", "value": self.stderr[kind]})
        default = self.default_normalization
        rows.append({**base, "metric": "acc", "value": self.accuracy[default]})
        rows.append({**base, "metric": "acc_stderr", "value": self.stderr[default]})
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
) -> TaskResult:
    """Score every choice of ``instances`` (``contexts``/``continuations``/``label``).

    The ``unconditional`` normalization subtracts log P(continuation | unconditional_context)
    (the task's ``TaskSpec.unconditional_context``). A log-likelihood that is NaN or infinite
    (corrupted or diverged weights) is an error naming the model, never an accuracy.
    """
    if default_normalization not in NORMALIZATIONS:
        raise ValueError(
            f"default_normalization={default_normalization!r}: expected one of {NORMALIZATIONS}"
        )
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
    both = score_requests(
        model,
        requests + unconditional_requests(requests, unconditional_context),
        convention=convention,
        batch_size=batch_size,
    )
    bad = sum(1 for score in both if not math.isfinite(score.logprob_sum))
    if bad:
        raise ValueError(
            f"{getattr(model, 'name', model)}: {bad} of {len(both)} log-likelihoods on task "
            f"{task} are not finite (NaN or infinite): its weights are corrupted or diverged; "
            "no accuracy is reported"
        )
    scores, baseline = both[: len(requests)], both[len(requests) :]
    normalized = {
        "none": normalize(scores, "none"),
        "per_token": normalize(scores, "per_token"),
        "per_char": normalize(scores, "per_char"),
        "unconditional": normalize(scores, "unconditional", unconditional=baseline),
    }
    accuracy, stderr = {}, {}
    for kind, values in normalized.items():
        best: dict[int, tuple[float, int]] = {}
        for (i, j), value in zip(owners, values, strict=True):
            if i not in best or value > best[i][0]:
                best[i] = (value, j)
        correct = [best[i][1] == instance.label for i, instance in enumerate(instances)]
        accuracy[kind] = float(np.mean(correct)) if correct else float("nan")
        stderr[kind] = accuracy_stderr(correct)
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
            "unconditional_logprob": base.logprob_sum,
            "truncated": score.truncated,
        }
        for (i, j), request, score, base in zip(owners, requests, scores, baseline, strict=True)
    ]
    return TaskResult(
        task, default_normalization, accuracy, len(instances), dumped, stderr=stderr, chance=chance
    )


def write_results(
    results: list[TaskResult], output: Path, *, model: str, step: int | None, dump_requests: bool
) -> list[dict[str, Any]]:
    """``results.json``, ``results.parquet`` and, when asked, ``requests.jsonl`` in ``output``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    output.mkdir(parents=True, exist_ok=True)
    rows = [row for result in results for row in result.rows(model=model, step=step)]
    (output / "results.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows), output / "results.parquet")
    if dump_requests:
        with (output / "requests.jsonl").open("w", encoding="utf-8") as out:
            for result in results:
                for record in result.requests:
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return rows
