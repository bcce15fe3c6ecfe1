"""Named sets of tasks, usable wherever a task list is (``--tasks olmes``, the trainer's
``eval.downstream_tasks``); ``params.yaml``'s ``eval.tasks`` lists a suite task by task (a
partition each), and the model report shows the suite's score where all its tasks are there.

========= ================================================================================
name      tasks
========= ================================================================================
``core9`` arc_easy, arc_challenge, boolq, copa, hellaswag, openbookqa, piqa, sciq, winogrande
          (OLMo's nine zero-shot tasks)
``mmlu``  the 57 MMLU subjects, ``mmlu_<subject>`` (5-shot from each subject's dev split)
``olmo1`` ``core9`` and ``mmlu:mc``: what OLMo 1 reported (MMLU 5-shot, lettered options)
``olmes`` arc_challenge, arc_easy, boolq, commonsense_qa, hellaswag, mmlu, openbookqa, piqa,
          social_iqa, winogrande: OLMES's ten tasks, all of which the shipped data covers
========= ================================================================================

A format suffix on a suite applies to each member that has none (``olmes:mc``); a member's
own suffix stays (``olmo1``'s ``mmlu:mc``). A suite's score (:func:`suite_rows`) is the mean
over its tasks of each task's ``acc``, MMLU counting once (its macro average over subjects);
where a task was scored in both formats, its better one counts, OLMES's rule. OLMES evaluates its ten tasks 5-shot with
curated shots; the wheel ships them (inside the requests OLMES rendered) for ARC, CommonsenseQA
and Social IQa in both formats and for OpenBookQA, PIQA, WinoGrande, HellaSwag and BoolQ
lettered, so ``--tasks olmes:mc --num-shots 5`` is OLMES's MC setup (BoolQ's evaluated
passages lack the page title OLMES's SuperGLUE copy begins with). Without ``--num-shots``
each task runs its default (0-shot; MMLU 5-shot).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from olmo_nn.eval.mmlu import MMLU_PREFIX, SUBJECT_CATEGORIES, subject_of

__all__ = ["SUITES", "expand_suites", "is_suite", "suite_rows"]

_CORE9 = (
    "arc_easy",
    "arc_challenge",
    "boolq",
    "copa",
    "hellaswag",
    "openbookqa",
    "piqa",
    "sciq",
    "winogrande",
)

SUITES: dict[str, tuple[str, ...]] = {
    "core9": _CORE9,
    "mmlu": tuple(MMLU_PREFIX + subject for subject in SUBJECT_CATEGORIES),
    "olmo1": (*_CORE9, "mmlu:mc"),
    "olmes": (
        "arc_challenge",
        "arc_easy",
        "boolq",
        "commonsense_qa",
        "hellaswag",
        "mmlu",
        "openbookqa",
        "piqa",
        "social_iqa",
        "winogrande",
    ),
}
"""Suite name -> its members, each a task, a suite, or either with a format suffix."""


def expand_suites(name: str, suffix: str | None = None) -> list[str]:
    """The task names ``name`` stands for: a suite's members (recursively), else itself.

    ``suffix`` (``"mc"``, ``"rc"``) is added to every name that has none.
    """
    base, colon, own = name.partition(":")
    suffix = own if colon else suffix
    if base not in SUITES:
        return [f"{base}:{suffix}" if suffix else base]
    expanded: list[str] = []
    for member in SUITES[base]:
        expanded += expand_suites(member, suffix)
    return expanded


def is_suite(name: str) -> bool:
    """Whether ``name`` (with or without a format suffix) names a suite."""
    return name.partition(":")[0] in SUITES


def suite_members(names: Sequence[str]) -> dict[str, list[str]]:
    """For each suite among ``names``, the task names it expands to."""
    return {name: expand_suites(name) for name in names if is_suite(name)}


def suite_rows(rows: Sequence[dict[str, Any]], suites: Sequence[str]) -> list[dict[str, Any]]:
    """A suite's ``acc`` for each of ``suites`` whose every task has an ``acc`` in ``rows``.

    The mean over the suite's tasks (MMLU once: the ``mmlu`` row of
    :func:`~olmo_nn.eval.mmlu.aggregate_rows`) of each task's ``acc``, the better of its
    formats where both were scored; ``count`` sums the examples, and a ``tasks`` row counts
    the tasks averaged. A suite with a task missing gets no row (a mean over part of it would
    read as the suite's score)."""
    scored: dict[str, tuple[float, int]] = {}
    for row in rows:
        if row["metric"] == "acc":
            scored[str(row["task"])] = (float(row["value"]), int(row["count"]))
    out: list[dict[str, Any]] = []
    run = {key: rows[0].get(key) for key in ("model", "step")} if rows else {}
    for suite in suites:
        best: dict[str, tuple[float, int]] = {}
        complete = True
        for name in expand_suites(suite.partition(":")[0]):
            base = "mmlu" if subject_of(name) else name.partition(":")[0]
            found = [scored[t] for t in (base, f"{base}:rc", f"{base}:mc") if t in scored]
            if not found:
                complete = False
                break
            best[base] = max(found)
        if not complete or not best:
            continue
        mean = math.fsum(value for value, _ in best.values()) / len(best)
        count = sum(examples for _, examples in best.values())
        base_row = {**run, "task": suite, "count": count}
        out += [
            {**base_row, "metric": "acc", "value": mean},
            {**base_row, "metric": "tasks", "value": float(len(best))},
        ]
    return out
