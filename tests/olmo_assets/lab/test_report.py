"""The model report's group scores (MMLU's averages and the suites') and a generative task's
main metric, from hand-made reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from olmo_assets.lab.report import ModelReport, eval_table_rows, write_model_report
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


CORE9 = ["arc_easy", "arc_challenge", "boolq", "copa", "hellaswag", "openbookqa", "piqa",
         "sciq", "winogrande"]  # fmt: skip


def test_core9_score_beside_other_tasks_and_olmo1_from_lettered_mmlu_keys() -> None:
    only_core9 = _report(CORE9, dict.fromkeys(CORE9, 0.5))
    assert only_core9.group_scores(10) == {}  # core9's score is the mean row
    with_more = _report(
        [*CORE9, "commonsense_qa"], {**dict.fromkeys(CORE9, 0.5), "commonsense_qa": 1.0}
    )
    assert with_more.group_scores(10) == {"core9": 0.5}
    # olmo1 = core9 + mmlu:mc, whose subjects are the partitions mmlu_<subject>-mc.
    lettered = {f"mmlu_{s}-mc": float(c == "stem") for s, c in SUBJECT_CATEGORIES.items()}
    olmo1 = _report([*CORE9, *lettered], {**dict.fromkeys(CORE9, 0.5), **lettered})
    scores = olmo1.group_scores(10)
    assert scores["mmlu-mc"] == pytest.approx(19 / 57) and scores["mmlu_stem-mc"] == 1.0
    assert scores["olmo1"] == pytest.approx((9 * 0.5 + 19 / 57) / 10)
    assert scores["core9"] == 0.5
    assert "olmes" not in scores and "mmlu" not in scores


def test_a_generative_task_is_reported_by_its_main_metric(tmp_path: Path) -> None:
    report = _report(["arc_easy-mc", "nq_open"], {"arc_easy-mc": 0.5, "nq_open": 0.25})
    report.losses = {1: 2.0, 10: 1.5}
    report.metric = {"arc_easy-mc": "acc", "nq_open": "f1"}
    report.normalization = {"arc_easy-mc": "none"}
    report.stderr = {(10, "arc_easy-mc"): 0.25, (10, "nq_open"): 0.125}
    report.chance = {"arc_easy-mc": 0.25}
    rows = {r["task"]: r for r in eval_table_rows(report)}
    assert (rows["nq_open"]["metric"], rows["nq_open"]["normalization"]) == ("f1", None)
    assert rows["nq_open"]["step10_acc"] == 0.25 and rows["mean"]["step10_acc"] == 0.375
    assert report.group_scores(10) == {}
    write_model_report(report, tmp_path)
    assert (tmp_path / "eval_by_step.csv").read_text() == (
        "step,task,metric,score,stderr,chance\n"
        "10,arc_easy-mc,acc,0.5,0.25,0.25\n"
        "10,nq_open,f1,0.25,0.125,\n"
    )
    assert (tmp_path / "acc_by_step.csv").read_text() == "step,arc_easy-mc,nq_open\n10,0.5,0.25\n"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["eval"]["step000010"] == {"arc_easy-mc": 0.5, "nq_open": 0.25, "mean": 0.375}
