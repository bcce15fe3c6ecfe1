"""The trainer's MLflow run: the experiment's view, and times a resume leaves alone."""

from __future__ import annotations

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
