"""The model report's group scores (MMLU's averages and the suites'), its mean row and a
generative task's main metric, from hand-made reports."""

from __future__ import annotations

import json
import math
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
    # The mean row leaves the generative task out: F1 is no accuracy.
    assert rows["nq_open"]["step10_acc"] == 0.25 and rows["mean"]["step10_acc"] == 0.5
    assert report.group_scores(10) == {}
    write_model_report(report, tmp_path)
    assert (tmp_path / "eval_by_step.csv").read_text() == (
        "step,task,metric,score,stderr,chance\n"
        "10,arc_easy-mc,acc,0.5,0.25,0.25\n"
        "10,nq_open,f1,0.25,0.125,\n"
    )
    assert (tmp_path / "acc_by_step.csv").read_text() == "step,arc_easy-mc,nq_open\n10,0.5,0.25\n"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["eval"]["step000010"] == {"arc_easy-mc": 0.5, "nq_open": 0.25, "mean": 0.5}


def test_the_mean_of_core9_is_the_plain_mean_of_its_nine() -> None:
    """The demo's tasks (core9, all ranked): the mean row is, to the bit, the mean over the
    tasks, its standard error sqrt(Σ se²) / 9 and its chance level the mean chance."""
    values = [0.1 + 0.07 * i for i in range(9)]
    errors = [0.01 + 0.013 * i for i in range(9)]
    chances = [0.25, 1 / 3, 0.5, 0.5, 0.25, 0.25, 0.5, 0.25, 0.5]
    report = _report(CORE9, dict(zip(CORE9, values, strict=True)))
    report.stderr = {(10, t): e for t, e in zip(CORE9, errors, strict=True)}
    report.chance = dict(zip(CORE9, chances, strict=True))
    assert report.mean_accuracy(10) == sum(values) / 9
    assert report.mean_stderr(10) == math.sqrt(sum(e * e for e in errors)) / 9
    assert report.mean_chance() == sum(chances) / 9


MIXED = ["arc_easy", "boolq", "nq_open", "mmlu_abstract_algebra", "mmlu_anatomy",
         "mmlu_philosophy"]  # fmt: skip


def _mixed_report() -> ModelReport:
    """Two ranked tasks, a generative one and three MMLU subjects (two STEM, one humanities)
    at step 10; only arc_easy at step 20."""
    report = _report(MIXED, {"arc_easy": 0.25, "boolq": 0.75, "nq_open": 0.25,
                             "mmlu_abstract_algebra": 0.25, "mmlu_anatomy": 0.5,
                             "mmlu_philosophy": 0.75})  # fmt: skip
    report.checkpoints = [10, 20]
    report.accuracy[20, "arc_easy"] = 0.5
    report.losses = {10: 2.0, 20: 1.5}
    report.metric = {**dict.fromkeys(MIXED, "acc"), "nq_open": "f1"}
    errors = {"arc_easy": 0.1, "boolq": 0.2, "nq_open": 0.5, "mmlu_abstract_algebra": 0.2,
              "mmlu_anatomy": 0.4, "mmlu_philosophy": 0.4}  # fmt: skip
    report.stderr = {(10, t): e for t, e in errors.items()} | {(20, "arc_easy"): 0.1}
    report.chance = {"arc_easy": 0.25, "boolq": 0.5, "mmlu_abstract_algebra": 0.25,
                     "mmlu_anatomy": 0.25, "mmlu_philosophy": 0.25}  # fmt: skip
    return report


def test_the_mean_counts_mmlu_once_and_leaves_generative_tasks_out() -> None:
    report = _mixed_report()
    assert report.mean_members() == {
        "arc_easy": ["arc_easy"],
        "boolq": ["boolq"],
        "mmlu": ["mmlu_abstract_algebra", "mmlu_anatomy", "mmlu_philosophy"],
    }
    # MMLU (0.25 + 0.5 + 0.75) / 3 = 0.5; the mean (0.25 + 0.75 + 0.5) / 3 = 0.5, where every
    # score alike would give 2.75 / 6.
    assert report.mean_accuracy(10) == pytest.approx(0.5)
    # MMLU's variance (0.04 + 0.16 + 0.16) / 9 = 0.04; sqrt(0.01 + 0.04 + 0.04) / 3 = 0.1.
    assert report.mean_stderr(10) == pytest.approx(0.1)
    assert report.mean_chance() == pytest.approx((0.25 + 0.5 + 0.25) / 3)
    assert (report.mean_accuracy(20), report.mean_stderr(20)) == (0.5, 0.1)  # arc_easy alone
    assert report.group_scores(10) == pytest.approx(
        {"mmlu": 0.5, "mmlu_stem": 0.375, "mmlu_humanities": 0.75}
    )
    assert report.group_scores(20) == {}


def test_group_scores_join_the_series_and_replace_the_subjects_panels(tmp_path: Path) -> None:
    import matplotlib.image

    report = _mixed_report()
    images = write_model_report(report, tmp_path)
    assert (tmp_path / "acc_by_step.csv").read_text() == (
        "step,arc_easy,boolq,nq_open,mmlu_abstract_algebra,mmlu_anatomy,mmlu_philosophy,"
        "mmlu,mmlu_stem,mmlu_humanities\n"
        "10,0.25,0.75,0.25,0.25,0.5,0.75,0.5,0.375,0.75\n"
        "20,0.5,,,,,,,,\n"
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["eval"]["step000010"]["mean"] == 0.5
    assert metrics["eval_stderr"]["step000010"]["mean"] == 0.1
    rows = {r["task"]: r for r in eval_table_rows(report)}
    assert rows["mean"]["chance"] == pytest.approx(1 / 3)
    # Six panels (arc_easy, boolq, nq_open, MMLU and its two categories), three per row: two
    # rows of 2.8 inches at 100 dpi, where the three subjects' own panels would make three.
    height, width, _ = matplotlib.image.imread(images["acc_by_step"]).shape
    assert (width, height) == (1080, 560)
    again = tmp_path / "again"
    again.mkdir()
    write_model_report(report, again)
    for name in ("acc_by_step.csv", "acc_by_step.png", "metrics.json", "eval_table.parquet"):
        assert (again / name).read_bytes() == (tmp_path / name).read_bytes()
