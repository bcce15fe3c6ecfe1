"""The trainer's MLflow run: the experiment's view, and times a resume leaves alone."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.olmo_nn.train.test_trainer import small_config, train


def test_an_experiment_the_trainer_creates_opens_in_the_model_training_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    config = small_config(tmp_path, mlflow=True, max_steps=3, mlflow_experiment="fresh")
    assert train(config, tmp_path / "run") == 0
    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name("fresh")
    assert experiment is not None
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_resume_changes_the_runs_times_only_if_it_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("OLMO_MLFLOW_RUN_TAGS", json.dumps({"olmo.kind": "training"}))
    client = MlflowClient(tracking_uri=uri)
    config = small_config(tmp_path, mlflow=True, max_steps=4, run_name="resumed")
    run_dir = tmp_path / "run"

    assert train(config, run_dir, "--stop-at", "2") == 0
    run_id = (run_dir / "mlflow_run_id").read_text()
    first = client.get_run(run_id).info
    assert first.status == "FINISHED"
    assert client.get_run(run_id).data.tags["olmo.kind"] == "training"

    # Two more steps: the run ends later.
    assert train(config, run_dir) == 0
    second = client.get_run(run_id).info
    assert second.status == "FINISHED"
    assert second.start_time == first.start_time
    assert second.end_time > first.end_time
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2, 3, 4]

    # Nothing left to train: status, times and metrics are left as they were.
    time.sleep(0.01)
    assert train(config, run_dir) == 0
    third = client.get_run(run_id).info
    assert (third.status, third.start_time, third.end_time) == (
        "FINISHED",
        second.start_time,
        second.end_time,
    )
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2, 3, 4]


def test_a_run_stopped_before_it_was_marked_finished_is_finished_by_the_next_launch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri)
    config = small_config(tmp_path, mlflow=True, max_steps=3)
    run_dir = tmp_path / "run"
    assert train(config, run_dir) == 0
    run_id = (run_dir / "mlflow_run_id").read_text()
    client.update_run(run_id, status="RUNNING")  # as a launcher killed after the last step
    assert train(config, run_dir) == 0
    assert client.get_run(run_id).info.status == "FINISHED"
