"""The evaluation steps' metadata: scores with their error, chance and normalization; the
in-loop validation loss beside the offline perplexity; the downstream check's new rows."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from olmo_assets.lab.params import Lab
from olmo_assets.lab.steps.evaluation import (
    IN_LOOP_VS_OFFLINE,
    accuracy_text,
    downstream_rows_complete,
    evaluate_downstream,
    evaluate_perplexity,
)
from olmo_nn.train.callbacks.metrics_file import read_metrics


def _values(folder: Path) -> dict[str, float]:
    rows = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    return {r["metric"]: r["value"] for r in rows if r.get("domain") is None and "source" not in r}


def test_accuracy_text() -> None:
    assert accuracy_text(0.425, 0.0782, 0.25, 40) == "0.425 ± 0.078 (chance 0.25, 40 examples)"
    assert accuracy_text(0.5, 0.1, 1 / 3, 8) == "0.500 ± 0.100 (chance 0.333, 8 examples)"


def test_downstream_metadata_reads_as_a_score(built_lab: Lab) -> None:
    result = evaluate_downstream(built_lab, 2, "winogrande")
    values = _values(built_lab.downstream(2, "winogrande"))
    acc, n = values["acc"], 8
    # lm-evaluation-harness's standard error of a mean of 0/1 scores, from acc and n alone.
    assert values["acc_stderr"] == math.sqrt(acc * (1 - acc) / (n - 1))
    assert values["chance"] == 0.5  # winogrande: two options for every example
    assert result.metadata["accuracy"] == (
        f"{acc:.3f} ± {values['acc_stderr']:.3f} (chance 0.5, 8 examples)"
    )
    assert result.metadata["normalization"] == "per_token"
    # No float whose line across partitions (checkpoint × task) would mean nothing.
    assert not any(isinstance(v, float) for v in result.metadata.values())
    assert result.metadata["examples"] == 8


def test_perplexity_metadata_has_the_in_loop_loss_at_that_step(built_lab: Lab) -> None:
    result = evaluate_perplexity(built_lab, 4)
    in_loop = {
        int(m["step"]): m["eval/loss"] for m in read_metrics(built_lab.run_dir) if "eval/loss" in m
    }
    assert result.metadata["in_loop_eval_loss"] == in_loop[4]
    assert result.metadata["in_loop_eval_perplexity"] == math.exp(in_loop[4])
    assert result.metadata["in_loop_vs_offline"] == IN_LOOP_VS_OFFLINE
    assert "prose/bits_per_byte" in result.metadata


def _lab_with_results(built_lab: Lab, target: Path) -> Lab:
    shutil.copy(built_lab.repo / "params.yaml", target / "params.yaml")
    folder = "lab/eval/downstream/step2/arc_easy"
    shutil.copytree(built_lab.repo / folder, target / folder)
    return Lab(target, built_lab.params, built_lab.values)


def test_downstream_check_passes_on_the_steps_rows(built_lab: Lab) -> None:
    result = downstream_rows_complete(built_lab, 2, "arc_easy")
    assert result.passed
    assert result.metadata == {
        "examples": 8,
        "missing": "none",
        "not_finite_or_incomplete": "none",
    }


def test_downstream_check_fails_without_chance_or_with_a_nan_stderr(
    built_lab: Lab, tmp_path: Path
) -> None:
    lab = _lab_with_results(built_lab, tmp_path)
    path = lab.downstream(2, "arc_easy") / "results.json"
    rows = json.loads(path.read_text(encoding="utf-8"))
    edited = [
        {**r, "value": math.nan} if r["metric"] == "acc_per_char_stderr" else r
        for r in rows
        if r["metric"] != "chance"
    ]
    path.write_text(json.dumps(edited), encoding="utf-8")
    result = downstream_rows_complete(lab, 2, "arc_easy")
    assert not result.passed
    assert result.metadata == {
        "examples": 8,
        "missing": "chance",
        "not_finite_or_incomplete": "acc_per_char_stderr",
    }
