"""The evaluation steps' metadata: scores with their error, chance and normalization; the
in-loop validation loss beside the offline perplexity; the downstream check's new rows."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

from olmo_assets.lab.params import Lab
from olmo_assets.lab.report import collect_model_report
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


def test_a_lettered_and_a_generative_task_run_as_partitions(built_lab: Lab, tmp_path: Path) -> None:
    """``arc_easy-mc`` is ``arc_easy:mc``'s partition; ``basic_arithmetic`` is generated and
    reported by its exact match, in the step, its check and the model report."""
    evaluation = dataclasses.replace(
        built_lab.params.eval, tasks=["arc_easy-mc", "basic_arithmetic"]
    )
    params = dataclasses.replace(built_lab.params, eval=evaluation)
    lab = Lab(tmp_path, params, built_lab.values)
    shutil.copy(built_lab.repo / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(built_lab.checkpoint(2), lab.checkpoint(2))
    shutil.copytree(built_lab.checkpoint_record(2), lab.checkpoint_record(2))
    lab.run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(built_lab.run_dir / "metrics.jsonl", lab.run_dir / "metrics.jsonl")

    lettered = evaluate_downstream(lab, 2, "arc_easy-mc")
    rows = json.loads((lab.downstream(2, "arc_easy-mc") / "results.json").read_text())
    assert {r["task"] for r in rows} == {"arc_easy:mc"}
    assert lettered.metadata["normalization"] == "none"  # the letters are scored as they are
    assert lettered.metadata["task"] == "arc_easy-mc"

    generated = evaluate_downstream(lab, 2, "basic_arithmetic")
    values = _values(lab.downstream(2, "basic_arithmetic"))
    assert set(values) == {"exact_match", "exact_match_stderr", "truncated_requests"}
    assert generated.metadata["score"] == (
        f"exact_match {values['exact_match']:.3f} ± {values['exact_match_stderr']:.3f} (8 examples)"
    )
    assert "normalization" not in generated.metadata and "accuracy" not in generated.metadata
    check = downstream_rows_complete(lab, 2, "basic_arithmetic")
    assert check.passed and check.metadata["missing"] == "none"

    report = collect_model_report(lab, [2])
    assert report.missing == ["lab/eval/perplexity/step2"]  # not run here
    assert report.metric == {"arc_easy-mc": "acc", "basic_arithmetic": "exact_match"}
    assert report.accuracy[2, "basic_arithmetic"] == values["exact_match"]
    assert report.stderr[2, "basic_arithmetic"] == values["exact_match_stderr"]
    assert report.normalization == {"arc_easy-mc": "none"}

    path = lab.downstream(2, "basic_arithmetic") / "results.json"
    path.write_text(
        json.dumps([r for r in json.loads(path.read_text()) if r["metric"] != "exact_match_stderr"])
    )
    check = downstream_rows_complete(lab, 2, "basic_arithmetic")
    assert not check.passed and check.metadata["missing"] == "exact_match_stderr"
