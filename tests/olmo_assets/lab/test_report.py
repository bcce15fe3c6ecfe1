"""The model report's group scores: MMLU's averages and the suites', from a hand-made report."""

from __future__ import annotations

import pytest

from olmo_assets.lab.report import ModelReport, eval_table_rows
from olmo_nn.eval.mmlu import SUBJECT_CATEGORIES

OLMES_OTHERS = ["arc_challenge", "arc_easy", "boolq", "commonsense_qa", "hellaswag",
                "openbookqa", "piqa", "social_iqa", "winogrande"]  # fmt: skip


def _report(tasks: list[str], accuracy: dict[str, float]) -> ModelReport:
    report = ModelReport(losses={}, eval_losses={}, tokens_seen=0, checkpoints=[10], tasks=tasks)
    for task, value in accuracy.items():
        report.accuracy[10, task] = value
        report.examples[task] = 4
    return report


def test_core9_tasks_have_no_group_rows() -> None:
    report = _report(["arc_easy", "winogrande"], {"arc_easy": 0.5, "winogrande": 0.25})
    assert report.group_scores(10) == {}
    assert [r["task"] for r in eval_table_rows(report)] == ["arc_easy", "winogrande", "mean"]


def test_mmlu_average_and_the_olmes_suite() -> None:
    subjects = [f"mmlu_{s}" for s in SUBJECT_CATEGORIES]
    # STEM subjects score 1, the others 0: the macro average is the share of STEM subjects.
    accuracy = {f"mmlu_{s}": float(c == "stem") for s, c in SUBJECT_CATEGORIES.items()}
    partial = _report(subjects, accuracy)
    scores = partial.group_scores(10)
    assert scores["mmlu"] == pytest.approx(19 / 57)
    assert scores["mmlu_stem"] == 1.0 and scores["mmlu_humanities"] == 0.0
    assert "olmes" not in scores  # its other nine tasks were not scored
    full = _report([*OLMES_OTHERS, *subjects], {**accuracy, **dict.fromkeys(OLMES_OTHERS, 0.5)})
    assert full.group_scores(10)["olmes"] == pytest.approx((9 * 0.5 + 19 / 57) / 10)
    rows = {r["task"]: r for r in eval_table_rows(full)}
    assert rows["olmes"]["step10_acc"] == pytest.approx((9 * 0.5 + 19 / 57) / 10)
    assert rows["mmlu_stem"]["step10_acc"] == 1.0 and rows["mmlu"]["step10_stderr"] is None
