"""Downstream results carry each accuracy's standard error and the task's chance level."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from olmo_nn.cli.main import main
from olmo_nn.eval.downstream import NORMALIZATIONS, accuracy_stderr, evaluate_task
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
