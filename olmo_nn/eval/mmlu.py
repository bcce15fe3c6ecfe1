"""MMLU (Hendrycks et al., 2021): 57 subjects, their four categories, and its averages.

Each subject is a task, ``mmlu_<subject>`` (``mmlu`` names all 57), evaluated on the subject's
``test`` split of ``hails/mmlu_no_train`` with shots from its ``dev`` split (five per subject,
MMLU's own; 5-shot by default, as MMLU, OLMo and OLMES report it). Both formats start with
the description MMLU, lm-evaluation-harness and OLMES use::

    The following are multiple choice questions (with answers) about abstract algebra.

then ``rc``: ``Question: {question}\\nAnswer:`` and `` {choice}``; ``mc``: the question, the
lettered options (:class:`~olmo_nn.eval.formats.MultipleChoice`) and `` A``… `` D``.

Results aggregate as MMLU reports them: ``mmlu`` is the macro average over the subjects, each
category (``mmlu_stem``, ``mmlu_humanities``, ``mmlu_social_sciences``, ``mmlu_other``) the
macro average over its subjects, and ``mmlu``'s ``acc_categories`` the macro average over the
four categories. :data:`SUBJECT_CATEGORIES` is MMLU's official subject-to-category map.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "CATEGORIES",
    "MMLU_DATASET",
    "MMLU_PREFIX",
    "SUBJECT_CATEGORIES",
    "aggregate_rows",
    "description",
    "subject_of",
]

MMLU_DATASET = "hails/mmlu_no_train"
MMLU_PREFIX = "mmlu_"
CATEGORIES: tuple[str, ...] = ("stem", "humanities", "social_sciences", "other")

# fmt: off
SUBJECT_CATEGORIES: dict[str, str] = {
    "abstract_algebra": "stem", "anatomy": "stem", "astronomy": "stem",
    "business_ethics": "other", "clinical_knowledge": "other", "college_biology": "stem",
    "college_chemistry": "stem", "college_computer_science": "stem",
    "college_mathematics": "stem", "college_medicine": "other", "college_physics": "stem",
    "computer_security": "stem", "conceptual_physics": "stem", "econometrics": "social_sciences",
    "electrical_engineering": "stem", "elementary_mathematics": "stem",
    "formal_logic": "humanities", "global_facts": "other", "high_school_biology": "stem",
    "high_school_chemistry": "stem", "high_school_computer_science": "stem",
    "high_school_european_history": "humanities", "high_school_geography": "social_sciences",
    "high_school_government_and_politics": "social_sciences",
    "high_school_macroeconomics": "social_sciences", "high_school_mathematics": "stem",
    "high_school_microeconomics": "social_sciences", "high_school_physics": "stem",
    "high_school_psychology": "social_sciences", "high_school_statistics": "stem",
    "high_school_us_history": "humanities", "high_school_world_history": "humanities",
    "human_aging": "other", "human_sexuality": "social_sciences",
    "international_law": "humanities", "jurisprudence": "humanities",
    "logical_fallacies": "humanities", "machine_learning": "stem", "management": "other",
    "marketing": "other", "medical_genetics": "other", "miscellaneous": "other",
    "moral_disputes": "humanities", "moral_scenarios": "humanities", "nutrition": "other",
    "philosophy": "humanities", "prehistory": "humanities", "professional_accounting": "other",
    "professional_law": "humanities", "professional_medicine": "other",
    "professional_psychology": "social_sciences", "public_relations": "social_sciences",
    "security_studies": "social_sciences", "sociology": "social_sciences",
    "us_foreign_policy": "social_sciences", "virology": "other",
    "world_religions": "humanities",
}
# fmt: on
"""MMLU's subject -> category map (``categories.py`` of the MMLU repository)."""


def description(subject: str) -> str:
    """The line before the shots: ``The following are … about {subject, spaced}.\\n\\n``."""
    topic = subject.replace("_", " ")
    return f"The following are multiple choice questions (with answers) about {topic}.\n\n"


def subject_of(task: str) -> str | None:
    """``"mmlu_anatomy:mc"`` -> ``"anatomy"``; ``None`` for a task that is no MMLU subject."""
    base, _, _ = task.partition(":")
    subject = base.removeprefix(MMLU_PREFIX)
    return subject if base.startswith(MMLU_PREFIX) and subject in SUBJECT_CATEGORIES else None


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def aggregate_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """MMLU's averages over the subject rows among ``rows`` (``TaskResult.rows``), per format.

    For each accuracy metric (``acc``, ``acc_<normalization>``) of the subjects present:
    ``mmlu[:fmt]`` the macro average over subjects, ``mmlu_<category>[:fmt]`` over each
    category's subjects, and ``mmlu[:fmt]`` ``<metric>_categories`` over the categories.
    Each row's ``count`` is the examples behind it; each average's ``subjects`` row counts
    the subjects averaged (fewer than 57: a partial average).
    """
    values: dict[tuple[str, str], dict[str, float]] = {}
    counts: dict[tuple[str, str], int] = {}
    run: dict[str, Any] = {}
    for row in rows:
        task, metric = str(row["task"]), str(row["metric"])
        subject = subject_of(task)
        if subject is None or not metric.startswith("acc") or metric.endswith("_stderr"):
            continue
        suffix = task[task.index(":") :] if ":" in task else ""
        values.setdefault((suffix, metric), {})[subject] = float(row["value"])
        counts[suffix, subject] = int(row["count"])
        run = {"model": row.get("model"), "step": row.get("step")}
    out: list[dict[str, Any]] = []

    def add(task: str, suffix: str, members: list[str], metric: str, value: float) -> None:
        base = {**run, "task": task + suffix, "count": sum(counts[suffix, s] for s in members)}
        out.append({**base, "metric": metric, "value": value})
        if not any(r["task"] == base["task"] and r["metric"] == "subjects" for r in out):
            out.append({**base, "metric": "subjects", "value": float(len(members))})

    for (suffix, metric), by_subject in sorted(values.items()):
        subjects = sorted(by_subject)
        add("mmlu", suffix, subjects, metric, _mean([by_subject[s] for s in subjects]))
        category_means = []
        for category in CATEGORIES:
            members = [s for s in subjects if SUBJECT_CATEGORIES[s] == category]
            if members:
                category_means.append(_mean([by_subject[s] for s in members]))
                add(f"mmlu_{category}", suffix, members, metric, category_means[-1])
        add("mmlu", suffix, subjects, f"{metric}_categories", _mean(category_means))
    return out
