"""Downstream results carry each accuracy's standard error and the task's chance level."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from olmo_nn.cli.main import main
from olmo_nn.eval.downstream import (
    NORMALIZATIONS,
    TaskResult,
    accuracy_stderr,
    evaluate_task,
    f1_score,
)
from olmo_nn.eval.models import load_language_model
from olmo_nn.eval.tasks import get_task_spec, load_task


@pytest.mark.parametrize(
    "scores",
    [[True, False, False, True], [True] * 3 + [False] * 37, [False] * 10, [True, False]],
)
def test_stderr_is_lm_evaluation_harness_s(scores: list[bool]) -> None:
    # lm-eval's stderr_for_metric(mean): sample_stddev (ddof=1) / sqrt(n).
    values = np.array(scores, dtype=float)
    expected = float(np.std(values, ddof=1) / math.sqrt(len(values)))
    assert accuracy_stderr(scores) == pytest.approx(expected, abs=1e-15)


def test_stderr_literals_and_too_few_examples() -> None:
    assert accuracy_stderr([True, False, False, True]) == pytest.approx(math.sqrt(0.25 / 3))
    # 17 of 40: sqrt(0.425 * 0.575 / 39); 0.425 ± 0.079.
    assert accuracy_stderr([True] * 17 + [False] * 23) == pytest.approx(0.0791582, abs=1e-7)
    assert math.isnan(accuracy_stderr([True]))
    assert math.isnan(accuracy_stderr([]))


F1_CASES = [  # (labels, predictions, F1 of choice 0), by hand: 2 TP / (2 TP + FP + FN)
    ([0, 0, 1, 1, 0, 1], [0, 1, 1, 0, 0, 0], 4 / 7),  # TP 2, FP 2, FN 1
    ([0, 1, 1, 0], [0, 0, 0, 0], 2 / 3),  # all positive: TP 2, FP 2
    ([0, 0, 1], [0, 0, 1], 1.0),
    ([0, 1, 0], [1, 1, 1], 0.0),  # all negative: no TP, precision undefined
    ([1, 1, 1], [0, 1, 1], 0.0),  # no positive label: recall undefined
    ([1, 1], [1, 1], 0.0),  # no positive anywhere: 0/0, scikit-learn's zero_division=0
]


@pytest.mark.parametrize(("labels", "predictions", "expected"), F1_CASES)
def test_f1_score_by_hand(labels: list[int], predictions: list[int], expected: float) -> None:
    assert f1_score(labels, predictions, 0) == pytest.approx(expected, abs=1e-15)
    # The positive class is the one asked for: choice 1 swaps the roles.
    swapped = [1 - label for label in labels], [1 - pred for pred in predictions]
    assert f1_score(*swapped, 1) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize(("labels", "predictions", "expected"), F1_CASES)
def test_f1_score_is_scikit_learns(
    labels: list[int], predictions: list[int], expected: float
) -> None:
    # What OLMo's olmo/eval/downstream.py calls for MRPC: f1_score(labels, preds, pos_label=0).
    metrics = pytest.importorskip("sklearn.metrics")
    theirs = metrics.f1_score(labels, predictions, pos_label=0, zero_division=0)
    assert f1_score(labels, predictions, 0) == pytest.approx(theirs, abs=1e-15)


def test_f1_score_needs_one_prediction_per_label() -> None:
    with pytest.raises(ValueError, match="3 labels but 2 predictions"):
        f1_score([0, 1, 0], [0, 1], 0)


def test_f1_row_beside_acc_only_where_computed() -> None:
    result = TaskResult("mrpc", "none", {"none": 0.5}, 4, [], {"none": 0.3}, chance=0.5, f1=0.4)
    metrics = [r["metric"] for r in result.rows(model="m", step=None)]
    assert metrics[metrics.index("acc_stderr") + 1] == "f1"
    f1 = next(r for r in result.rows(model="m", step=3) if r["metric"] == "f1")
    assert (f1["value"], f1["count"], f1["step"], f1["task"]) == (0.4, 4, 3, "mrpc")
    result.f1 = None
    assert "f1" not in {r["metric"] for r in result.rows(model="m", step=None)}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> object:
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    assert main(["model", "init", "--preset", "tiny", "n_layers=1", "d_model=64", "n_heads=2",
                 "mlp_hidden_size=128", "--output", str(path)]) == 0  # fmt: skip
    return load_language_model(Path(path))


def test_rows_have_stderr_for_every_accuracy_and_the_chance_level(model: object) -> None:
    spec = get_task_spec("arc_easy")
    instances = load_task("arc_easy", limit=12)
    result = evaluate_task(
        model, "arc_easy", instances, default_normalization=spec.default_normalization
    )
    rows = {r["metric"]: r for r in result.rows(model="tiny", step=None)}
    for kind in NORMALIZATIONS:
        p = rows[f"acc_{kind}"]["value"]
        assert rows[f"acc_{kind}_stderr"]["value"] == pytest.approx(math.sqrt(p * (1 - p) / 11))
    assert rows["acc_stderr"]["value"] == rows[f"acc_{spec.default_normalization}_stderr"]["value"]
    # ARC has three to five options per question: chance is the mean of 1 / options.
    expected = sum(1 / len(i.continuations) for i in instances) / len(instances)
    assert rows["chance"]["value"] == pytest.approx(expected)
    assert {len(i.continuations) for i in instances} <= {3, 4, 5}
    assert all(r["count"] == 12 for r in rows.values())
