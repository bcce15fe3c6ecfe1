"""An MLflow run per training run: parameters, batched metrics, checkpoints by path and hash.

The tracking URI comes from ``MLFLOW_TRACKING_URI`` (default ``sqlite:///mlflow.db`` in the
working directory). Checkpoints are recorded as paths and content hashes, never uploaded: the
hash is :func:`~olmo_nn.checkpoint.integrity.content_hash`, the sha256 of the ``SHA256SUMS``
the save wrote (the lab's checkpoint records and evaluation runs carry the same value), so
recording a checkpoint reads one small file, not its weights, in the training loop. A
resumed run continues the same MLflow run (its id is kept in ``RUN_DIR/mlflow_run_id``).

A resume changes the run's status and end time only if it trains a step: a relaunch of a
finished run that has nothing left to train leaves both as they were (so the run's duration
stays the training's). Whoever launches the trainer can add tags to its run through
``OLMO_MLFLOW_RUN_TAGS`` (a JSON object), set when the run is created or next trains.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olmo_nn.checkpoint.integrity import content_hash
from olmo_nn.train.callbacks.base import Callback

if TYPE_CHECKING:
    from olmo_nn.train.trainer import Trainer

__all__ = ["DEFAULT_TRACKING_URI", "RUN_TAGS_ENV", "MLflowLogger"]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
EXPERIMENT_KIND_TAGS = {"mlflow.experimentKind": "custom_model_development"}
"""An experiment this callback creates opens in MLflow 3's model-training view, not GenAI's."""
RUN_TAGS_ENV = "OLMO_MLFLOW_RUN_TAGS"
"""A JSON object of tags for the run, from whoever launched the trainer."""
_RUN_ID_FILE = "mlflow_run_id"
_BATCH = 50


def _launcher_tags() -> dict[str, str]:
    text = os.environ.get(RUN_TAGS_ENV, "").strip()
    if not text:
        return {}
    tags = json.loads(text)
    if not isinstance(tags, dict):
        raise ValueError(f"{RUN_TAGS_ENV}={text!r}: expected a JSON object of tags")
    return {str(k): str(v) for k, v in tags.items()}


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:500]
    return flat


class MLflowLogger(Callback):
    """Rank 0 only. Metrics are sent in batches with ``log_batch`` (one call is ~9 ms on SQLite)."""

    def __init__(self) -> None:
        self._client: Any = None
        self._run_id: str | None = None
        self._pending: list[Any] = []
        # A run that existed before this launch is set RUNNING only once a step trains.
        self._resumed = False
        self._steps_trained = 0

    def on_train_start(self, trainer: Trainer) -> None:
        if not trainer.ctx.is_main:
            return
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)
        mlflow.set_tracking_uri(uri)
        self._client = MlflowClient(tracking_uri=uri)
        experiment = self._client.get_experiment_by_name(trainer.config.mlflow_experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self._client.create_experiment(
                trainer.config.mlflow_experiment, tags=EXPERIMENT_KIND_TAGS
            )
        )
        id_file = trainer.run_dir / _RUN_ID_FILE
        if id_file.is_file():
            self._run_id = id_file.read_text().strip()
            self._resumed = True
        else:
            run = self._client.create_run(
                experiment_id,
                run_name=trainer.config.run_name,
                tags={
                    "run_dir": str(trainer.run_dir.resolve()),
                    "world_size": str(trainer.ctx.world_size),
                    **_launcher_tags(),
                },
            )
            self._run_id = run.info.run_id
            id_file.write_text(self._run_id)
            from mlflow.entities import Param

            params = [Param(k, v) for k, v in _flatten(trainer.config.to_dict()).items()]
            for i in range(0, len(params), 100):
                self._client.log_batch(self._run_id, params=params[i : i + 100])

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if self._client is None:
            return
        from mlflow.entities import Metric, RunTag

        if self._resumed and not self._steps_trained:
            self._client.update_run(self._run_id, status="RUNNING")
            tags = _launcher_tags()
            if tags:
                self._client.log_batch(self._run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self._steps_trained += 1

        timestamp = int(1000 * time.time())
        for key, value in metrics.items():
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                self._pending.append(Metric(key, float(value), timestamp, metrics["step"]))
        if len(self._pending) >= _BATCH * 8:
            self._flush()

    def _flush(self) -> None:
        if self._client is not None and self._pending:
            for i in range(0, len(self._pending), 1000):
                self._client.log_batch(self._run_id, metrics=self._pending[i : i + 1000])
            self._pending = []

    def on_checkpoint(self, trainer: Trainer, path: Path, *, step: int, unsharded: bool) -> None:
        if self._client is None:
            return
        self._flush()
        prefix = f"checkpoint.{'unsharded' if unsharded else 'sharded'}.step{step:06d}"
        self._client.set_tag(self._run_id, f"{prefix}.path", str(path.resolve()))
        # The save has just written and hashed the files: reuse its record.
        self._client.set_tag(self._run_id, f"{prefix}.sha256", content_hash(path, verify=False))

    def on_train_end(self, trainer: Trainer) -> None:
        if self._client is None:
            return
        self._flush()
        if self._steps_trained or not self._resumed:
            self._client.set_terminated(self._run_id, status="FINISHED")
        elif self._client.get_run(self._run_id).info.status != "FINISHED":
            # Stopped after its last step but before it was marked finished: it is now.
            self._client.set_terminated(self._run_id, status="FINISHED")
