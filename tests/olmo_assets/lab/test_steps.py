"""The model_report step on a small lab: files, literal contents, checks, determinism."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from olmo_assets.lab.params import Lab
from olmo_assets.lab.pipeline import stage_named
from olmo_assets.lab.report import collect_model_report
from olmo_assets.lab.steps.reports import model_report as run_model_report
from olmo_assets.lab.steps.reports import model_report_complete
from olmo_assets.lab.steps.results import StepResult
from olmo_nn.train.callbacks.metrics_file import read_metrics


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as rows:
        return list(csv.DictReader(rows))


def _acc(lab: Lab, step: int, task: str, metric: str = "acc") -> float:
    rows = json.loads((lab.downstream(step, task) / "results.json").read_text(encoding="utf-8"))
    return next(r["value"] for r in rows if r["metric"] == metric)


def _trailing_mean(values: list[float], window: int) -> list[float]:
    return [
        sum(values[max(0, i + 1 - window) : i + 1]) / len(values[max(0, i + 1 - window) : i + 1])
        for i in range(len(values))
    ]


def test_model_report_reads_exactly_its_eval_params() -> None:
    stage = stage_named("model_report")
    assert stage.params == ("eval.checkpoints", "eval.tasks")
    assert stage.fanout.keys == ()


def test_loss_csv_holds_every_logged_loss(built_lab: Lab, model_report: StepResult) -> None:
    metrics = read_metrics(built_lab.run_dir)
    rows = _csv(built_lab.model_report / "loss.csv")
    losses = [m["loss"] for m in metrics]
    assert list(rows[0]) == ["step", "loss", "loss_smoothed", "eval_loss"]
    assert [int(r["step"]) for r in rows] == [m["step"] for m in metrics]
    assert [float(r["loss"]) for r in rows] == losses
    # Four steps: the curve's window is max(1, 4 // 20) = 1, the raw loss itself.
    assert [float(r["loss_smoothed"]) for r in rows] == _trailing_mean(losses, 1) == losses
    assert {int(r["step"]): float(r["eval_loss"]) for r in rows if r["eval_loss"]} == {
        m["step"]: m["eval/loss"] for m in metrics if "eval/loss" in m
    }
    # Four steps: the smoothed final loss is the mean of all four (at least ten, as many as
    # there are).
    assert model_report.metadata["final_loss_smoothed"] == sum(losses) / 4
    assert model_report.metadata["final_loss_window"] == (
        "mean of the train loss over steps 1–4 (all 4: a run this short)"
    )
    assert model_report.metadata["raw_final_loss"] == (
        f"{losses[-1]:.4f} at step 4 (one step: noisy)"
    )


def test_smoothing_windows() -> None:
    from olmo_assets.lab.report import final_loss_window, moving_average, smoothed_final_loss

    assert [final_loss_window(n) for n in (1, 4, 10, 99, 100, 300, 301)] == [
        1, 4, 10, 10, 10, 30, 31,
    ]  # fmt: skip
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    losses = {step: float(step) for step in range(1, 301)}
    assert smoothed_final_loss(losses) == (
        sum(range(271, 301)) / 30,
        "steps 271–300 (the last 30 of 300: 10% of the run, at least 10 steps)",
    )


def test_metrics_json_has_the_final_loss_and_every_score(
    built_lab: Lab, model_report: StepResult
) -> None:
    data = json.loads((built_lab.model_report / "metrics.json").read_text(encoding="utf-8"))
    params = built_lab.params
    metrics = read_metrics(built_lab.run_dir)
    assert set(data) == {"checkpoints", "train", "eval", "eval_stderr", "perplexity"}
    assert data["checkpoints"] == [f"step{s:06d}" for s in params.eval.checkpoints]
    assert data["train"]["steps"] == params.train.max_steps
    assert data["train"]["final_loss"] == round(metrics[-1]["loss"], 4)
    assert data["train"]["final_loss_smoothed"] == round(sum(m["loss"] for m in metrics) / 4, 4)
    assert data["train"]["tokens_seen"] == metrics[-1]["tokens_seen"]
    assert sorted(data["eval"]) == [f"step{s:06d}" for s in params.eval.checkpoints]
    for step in params.eval.checkpoints:
        scores = data["eval"][f"step{step:06d}"]
        assert set(scores) == {*params.eval.tasks, "mean"}
        errors = data["eval_stderr"][f"step{step:06d}"]
        for task in params.eval.tasks:
            assert scores[task] == round(_acc(built_lab, step, task), 4)
            assert errors[task] == round(_acc(built_lab, step, task, "acc_stderr"), 4)
        # The mean of independent tasks: sqrt(sum of squared errors) / number of tasks.
        squares = sum(_acc(built_lab, step, t, "acc_stderr") ** 2 for t in params.eval.tasks)
        assert errors["mean"] == round(math.sqrt(squares) / len(params.eval.tasks), 4)
        sources = data["perplexity"][f"step{step:06d}"]
        assert "prose" in sources
        assert set(sources["prose"]) == {"perplexity", "bits_per_byte"}


def test_eval_tables_match_the_results(built_lab: Lab, model_report: StepResult) -> None:
    params = built_lab.params
    rows = _csv(built_lab.model_report / "eval_by_step.csv")
    assert {
        (int(r["step"]), r["task"], r["metric"]): (
            float(r["score"]),
            float(r["stderr"]),
            float(r["chance"]),
        )
        for r in rows
    } == {
        (step, task, "acc"): tuple(
            _acc(built_lab, step, task, m) for m in ("acc", "acc_stderr", "chance")
        )
        for step in params.eval.checkpoints
        for task in params.eval.tasks
    }
    table = pq.read_table(built_lab.model_report / "eval_table.parquet").to_pylist()
    # A row per task (every one, then their mean), a column per checkpoint.
    assert [r["task"] for r in table] == ["arc_easy", "winogrande", "mean"]
    assert list(table[0]) == [
        "task", "metric", "normalization", "chance", "examples",
        "step2_acc", "step2_stderr", "step4_acc", "step4_stderr",
    ]  # fmt: skip
    assert table[0] == {
        "task": "arc_easy",
        "metric": "acc",
        "normalization": "unconditional",  # OLMo's for ARC
        "chance": _acc(built_lab, 2, "arc_easy", "chance"),
        "examples": 8,
        "step2_acc": _acc(built_lab, 2, "arc_easy"),
        "step2_stderr": _acc(built_lab, 2, "arc_easy", "acc_stderr"),
        "step4_acc": _acc(built_lab, 4, "arc_easy"),
        "step4_stderr": _acc(built_lab, 4, "arc_easy", "acc_stderr"),
    }
    assert (table[1]["normalization"], table[1]["chance"]) == ("per_token", 0.5)  # two options
    assert table[2]["step4_acc"] == pytest.approx(
        sum(_acc(built_lab, 4, t) for t in params.eval.tasks) / 2
    )
    wide = _csv(built_lab.model_report / "acc_by_step.csv")
    assert list(wide[0]) == ["step", *params.eval.tasks]
    # The page shows it narrow: acc ± stderr per checkpoint, as text.
    assert model_report.tables["evaluation"] == [
        {k: r[k] for k in ("task", "metric", "normalization", "chance")}
        | {f"step {s}": f"{r[f'step{s}_acc']:.3f} ± {r[f'step{s}_stderr']:.3f}" for s in (2, 4)}
        for r in table
    ]


def test_report_check_plots_and_no_timings(built_lab: Lab, model_report: StepResult) -> None:
    check = model_report_complete(built_lab)
    assert check.passed and check.metadata == {"expected": 6, "missing": "none"}
    assert set(model_report.images) == {"loss", "acc_by_step", "bits_per_byte"}
    for image in model_report.images.values():
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = "".join(p.read_text(encoding="utf-8") for p in built_lab.model_report.glob("*.[cj]s*"))
    assert "tokens_per_s" not in text and "mfu" not in text


def test_model_report_is_deterministic(built_lab: Lab, model_report: StepResult) -> None:
    before = {p.name: p.read_bytes() for p in built_lab.model_report.iterdir()}
    run_model_report(built_lab)
    after = {p.name: p.read_bytes() for p in built_lab.model_report.iterdir()}
    assert after == before


def test_rows_complete_lists_what_is_missing(built_lab: Lab, model_report: StepResult) -> None:
    evaluation = built_lab.params.eval
    params = dataclasses.replace(
        built_lab.params, eval=dataclasses.replace(evaluation, tasks=[*evaluation.tasks, "boolq"])
    )
    report = collect_model_report(Lab(built_lab.repo, params))
    assert report.missing == [
        f"lab/eval/downstream/step{step}/boolq" for step in params.eval.checkpoints
    ]


def test_an_evaluation_refuses_a_checkpoint_changed_after_its_record(
    built_lab: Lab, tmp_path: Path
) -> None:
    """Even with a consistent SHA256SUMS (a deliberate swap, not damage), the weights must be
    the ones the lab's checkpoint record names."""
    import shutil

    from olmo_assets.lab.steps.evaluation import evaluate_downstream
    from olmo_assets.lab.steps.results import InputError
    from olmo_nn.checkpoint.integrity import write_manifest

    lab = Lab(tmp_path, built_lab.params, built_lab.values)
    shutil.copy(built_lab.repo / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(built_lab.checkpoint(2), lab.checkpoint(2))
    shutil.copytree(built_lab.checkpoint_record(2), lab.checkpoint_record(2))
    weights = lab.checkpoint(2) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    (lab.checkpoint(2) / "SHA256SUMS").unlink()
    write_manifest(lab.checkpoint(2))
    with pytest.raises(InputError) as refused:
        evaluate_downstream(lab, 2, "arc_easy")
    record = lab.checkpoint_record(2) / "checkpoint.json"
    assert str(refused.value).startswith(f"{lab.checkpoint(2)} changed after it was recorded: ")
    assert str(refused.value).endswith(
        f"{record} says {json.loads(record.read_text())['sha256'][:16]}; if the change is meant, "
        "record it again (`dvc repro checkpoint@2`, or materialize checkpoint[2])"
    )
