"""The model_report step on a small lab: files, literal contents, checks, determinism."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pyarrow.parquet as pq

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


def _acc(lab: Lab, step: int, task: str) -> float:
    rows = json.loads((lab.downstream(step, task) / "results.json").read_text(encoding="utf-8"))
    return next(r["value"] for r in rows if r["metric"] == "acc")


def test_model_report_reads_exactly_its_eval_params() -> None:
    stage = stage_named("model_report")
    assert stage.params == ("eval.checkpoints", "eval.tasks")
    assert stage.fanout.keys == ()


def test_loss_csv_holds_every_logged_loss(built_lab: Lab, model_report: StepResult) -> None:
    metrics = read_metrics(built_lab.run_dir)
    rows = _csv(built_lab.model_report / "loss.csv")
    assert [int(r["step"]) for r in rows] == [m["step"] for m in metrics]
    assert [float(r["loss"]) for r in rows] == [m["loss"] for m in metrics]
    assert {int(r["step"]): float(r["eval_loss"]) for r in rows if r["eval_loss"]} == {
        m["step"]: m["eval/loss"] for m in metrics if "eval/loss" in m
    }
    assert model_report.metadata["final_loss"] == metrics[-1]["loss"]


def test_metrics_json_has_the_final_loss_and_every_score(
    built_lab: Lab, model_report: StepResult
) -> None:
    data = json.loads((built_lab.model_report / "metrics.json").read_text(encoding="utf-8"))
    params = built_lab.params
    metrics = read_metrics(built_lab.run_dir)
    assert set(data) == {"train", "eval", "perplexity"}
    assert data["train"]["steps"] == params.train.max_steps
    assert data["train"]["final_loss"] == round(metrics[-1]["loss"], 4)
    assert data["train"]["tokens_seen"] == metrics[-1]["tokens_seen"]
    assert sorted(data["eval"]) == [f"step{s:06d}" for s in params.eval.checkpoints]
    for step in params.eval.checkpoints:
        scores = data["eval"][f"step{step:06d}"]
        assert set(scores) == {*params.eval.tasks, "mean"}
        for task in params.eval.tasks:
            assert scores[task] == round(_acc(built_lab, step, task), 4)
        sources = data["perplexity"][f"step{step:06d}"]
        assert "prose" in sources
        assert set(sources["prose"]) == {"perplexity", "bits_per_byte"}


def test_eval_tables_match_the_results(built_lab: Lab, model_report: StepResult) -> None:
    params = built_lab.params
    rows = _csv(built_lab.model_report / "eval_by_step.csv")
    assert {(int(r["step"]), r["task"]): float(r["acc"]) for r in rows} == {
        (step, task): _acc(built_lab, step, task)
        for step in params.eval.checkpoints
        for task in params.eval.tasks
    }
    table = pq.read_table(built_lab.model_report / "eval_table.parquet").to_pylist()
    assert [r["step"] for r in table] == params.eval.checkpoints
    assert table[0] == {"step": 2} | {t: _acc(built_lab, 2, t) for t in params.eval.tasks}
    wide = _csv(built_lab.model_report / "acc_by_step.csv")
    assert list(wide[0]) == ["step", *params.eval.tasks]
    assert model_report.tables["evaluation"] == table


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

    import pytest

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
