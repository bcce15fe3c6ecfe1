"""The lab's tests: MLflow calls go to each lab's own store. The session's small lab
(``built_lab``) is in ``tests/olmo_assets/conftest.py``."""

from __future__ import annotations

import pytest

from tests.olmo_assets.conftest import (
    CHECKPOINTS,
    GLOBAL_BATCH_SIZE,
    MAX_STEPS,
    REPO,
    TASKS,
    small_params,
)

__all__ = ["CHECKPOINTS", "GLOBAL_BATCH_SIZE", "MAX_STEPS", "REPO", "TASKS", "small_params"]


@pytest.fixture(autouse=True)
def _embedded_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow calls in these tests go to the lab's own SQLite store, never a configured server."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
