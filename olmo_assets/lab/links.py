"""Addresses of the lab's artifacts in the two UIs: Dagster's asset pages, MLflow's runs.

Materializations and MLflow runs link to each other by URL, so a researcher can click from a
score to its checkpoint, the training run and the sources. The UIs' addresses are where
``make ui`` serves them unless the environment says otherwise:

* ``OLMO_DAGSTER_URL`` (default ``http://127.0.0.1:3000``): the Dagster webserver;
* ``OLMO_MLFLOW_URL`` (default ``http://127.0.0.1:5000``): the MLflow UI (which also serves
  the plots shown on asset pages, as run artifacts).

A link is recorded when its materialization is: moving a UI to another address leaves older
links pointing at the old one.
"""

from __future__ import annotations

import os
from urllib.parse import quote, urlencode

__all__ = [
    "DAGSTER_URL_ENV",
    "MLFLOW_URL_ENV",
    "dagster_asset_url",
    "dagster_run_url",
    "dagster_url",
    "mlflow_artifact_url",
    "mlflow_run_url",
    "mlflow_url",
]

DAGSTER_URL_ENV = "OLMO_DAGSTER_URL"
MLFLOW_URL_ENV = "OLMO_MLFLOW_URL"
DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"
DEFAULT_MLFLOW_URL = "http://127.0.0.1:5000"


def dagster_url() -> str:
    return os.environ.get(DAGSTER_URL_ENV, DEFAULT_DAGSTER_URL).rstrip("/")


def mlflow_url() -> str:
    return os.environ.get(MLFLOW_URL_ENV, DEFAULT_MLFLOW_URL).rstrip("/")


def dagster_asset_url(path: tuple[str, ...] | list[str], partition: str | None = None) -> str:
    """An asset's page; with a partition, that partition's materialization (its metadata)."""
    url = f"{dagster_url()}/assets/" + "/".join(quote(part, safe="") for part in path)
    if partition is None:
        return url
    return f"{url}?{urlencode({'view': 'partitions', 'partition': partition})}"


def dagster_run_url(run_id: str) -> str:
    return f"{dagster_url()}/runs/{quote(run_id, safe='')}"


def mlflow_run_url(experiment_id: str, run_id: str) -> str:
    return f"{mlflow_url()}/#/experiments/{quote(experiment_id)}/runs/{quote(run_id)}"


def mlflow_artifact_url(run_id: str, artifact_path: str) -> str:
    """A run's artifact file as the MLflow server serves it (an image renders in a page)."""
    return f"{mlflow_url()}/get-artifact?" + urlencode({"path": artifact_path, "run_uuid": run_id})
