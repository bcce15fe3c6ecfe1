"""The train step: progress while the trainer runs, headline numbers, MLflow times on rerun."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from olmo_assets.lab.params import Lab
from olmo_assets.lab.progress import reporting_to
from olmo_assets.lab.steps.training import TrainingProgress, train
from olmo_assets.lab.tracking import training_run_id
from olmo_nn.train.callbacks.metrics_file import read_metrics


def _record(step: int, **extra: Any) -> bytes:
    return (
        json.dumps({"step": step, "loss": 10.0 / step, "tokens_per_s": 1234.5, **extra}) + "\n"
    ).encode()


def test_progress_follows_the_growing_file_every_n_steps(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines: list[str] = []
    progress = TrainingProgress(path, max_steps=7, every=3)
    with reporting_to(lines.append):
        progress()  # no file yet
        path.write_bytes(_record(1) + _record(2) + _record(3)[:10])  # a line half written
        progress()
        with path.open("ab") as out:
            out.write(_record(3)[10:] + _record(4) + _record(5) + _record(6, **{"eval/loss": 2.5}))
        progress()
        with path.open("ab") as out:
            out.write(_record(7))
        progress()
        progress()
    assert lines == [
        "step 3/7 (43%)  loss 3.3333  1,234 tokens/s",
        "step 6/7 (86%)  loss 1.6667  validation loss 2.5000  1,234 tokens/s",
        "step 7/7 (100%)  loss 1.4286  1,234 tokens/s",
    ]


def test_progress_rereads_a_truncated_file_and_reports_a_step_once(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines: list[str] = []
    progress = TrainingProgress(path, max_steps=4, every=1)
    with reporting_to(lines.append):
        path.write_bytes(_record(1) + _record(2) + _record(3))
        progress()
        path.write_bytes(_record(1) + _record(2))  # a resume truncates to its checkpoint
        progress()
        with path.open("ab") as out:
            out.write(_record(3) + _record(4))
        progress()
    assert [line.split("  ")[0] for line in lines] == [
        "step 1/4 (25%)",
        "step 2/4 (50%)",
        "step 3/4 (75%)",
        "step 4/4 (100%)",
    ]


def test_the_default_interval_is_a_twentieth_of_the_run(tmp_path: Path) -> None:
    assert TrainingProgress(tmp_path / "m", max_steps=300).every == 15
    assert TrainingProgress(tmp_path / "m", max_steps=4).every == 1


def test_a_rerun_with_nothing_to_train_leaves_mlflow_times_and_reports(built_lab: Lab) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=built_lab.mlflow_uri)
    run_id = training_run_id(built_lab)
    assert run_id is not None
    before = client.get_run(run_id).info
    lines: list[str] = []
    with reporting_to(lines.append):
        result = train(built_lab)
    after = client.get_run(run_id).info
    # The trainer resumed at max_steps and trained nothing: the run's times stay the training's.
    assert (after.status, after.start_time, after.end_time) == (
        "FINISHED",
        before.start_time,
        before.end_time,
    )
    losses = [m["loss"] for m in read_metrics(built_lab.run_dir)]
    assert lines[-1].startswith(f"step 4/4 (100%)  loss {losses[-1]:.4f}")
    assert result.metadata["final_loss_smoothed"] == sum(losses) / 4
    assert result.metadata["final_loss_window"] == (
        "mean of the train loss over steps 1–4 (all 4: a run this short)"
    )
    assert result.metadata["raw_first_loss"] == f"{losses[0]:.4f} at step 1"
    assert result.metadata["raw_last_loss"] == f"{losses[-1]:.4f} at step 4 (one step: noisy)"
    assert result.metadata["mlflow_run_id"] == run_id
    assert not any(
        isinstance(v, float)
        for k, v in result.metadata.items()
        if "loss" in k and k != "final_loss_smoothed"
    )
