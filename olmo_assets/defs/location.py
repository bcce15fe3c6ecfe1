"""The code location for one lab: assets, jobs, the stage client and the executor.

``olmo_assets.definitions`` (named by ``workspace.yaml``) calls :func:`build_definitions`
for the repository's lab; tests call it for a small copy.

Jobs (selections are built from asset keys, never parsed from strings):

* ``curation``: the raw sources through the token shards and the corpus report;
* ``training``: the training run, its data order and the checkpoints;
* ``evaluation``: the downstream tasks (checkpoint x task) and the model report;
* ``perplexity``: perplexity per checkpoint.

Dagster requires a job's partitioned assets to share one partitions definition, so there is
no single job for everything: the asset graph's "Materialize all" (or a group's) launches an
asset backfill that runs every asset and partition in dependency order.

Jobs that train carry the ``olmo/training`` run tag, which the instance limits to one run at
a time (``.dagster/dagster.yaml``); the training op is in the ``olmo_training`` pool, which
covers ad-hoc materializations too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dagster import (
    AssetKey,
    AssetSelection,
    Definitions,
    define_asset_job,
    multiprocess_executor,
)
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from olmo_assets.defs.assets import STAGE_CLIENT, TRAINING_TAG, build_assets
from olmo_assets.defs.catalog import ARTIFACTS
from olmo_assets.defs.launch import StageClient
from olmo_assets.lab.params import Lab

__all__ = ["MAX_CONCURRENT_STEPS", "build_definitions", "build_jobs", "stage_environment"]

MAX_CONCURRENT_STEPS = 2
"""Steps a run executes at once (the multiprocess executor); curation steps use workers too."""


def _keys(group: str) -> list[AssetKey]:
    return [AssetKey(item.key) for item in ARTIFACTS if item.group == group]


def build_jobs() -> list[UnresolvedAssetJobDefinition]:
    """One job per partitioning: Dagster requires a job's partitioned assets to share one
    partitions definition, so the evaluation of tasks (checkpoint x task) and of perplexity
    (checkpoint) are separate jobs, and the whole pipeline is the asset graph's
    "Materialize all" (an asset backfill, which runs each asset's partitions in order)."""
    training_run = {TRAINING_TAG: "1"}
    return [
        define_asset_job(
            "curation",
            AssetSelection.assets(*_keys("curation")),
            description="Raw sources (per source) to token shards and the corpus report.",
        ),
        define_asset_job(
            "training",
            AssetSelection.assets(*_keys("training")),
            description="Train under torchrun, then record every kept checkpoint.",
            tags=training_run,
        ),
        define_asset_job(
            "evaluation",
            AssetSelection.assets(AssetKey("downstream_eval"), AssetKey("model_report")),
            description="Downstream tasks per checkpoint and task, then the model report.",
        ),
        define_asset_job(
            "perplexity",
            AssetSelection.assets(AssetKey("perplexity_eval")),
            description="Perplexity per source on the validation splits, per checkpoint.",
        ),
    ]


def stage_environment(lab: Lab) -> dict[str, str]:
    """What the stage processes need besides the Pipes variables: the lab, MLflow's store,
    Dagster's instance, and this interpreter's scripts on PATH (torchrun, dvc)."""
    scripts = str(Path(sys.executable).parent)
    env = {
        "OLMO_LAB_REPO": str(lab.repo),
        "MLFLOW_TRACKING_URI": lab.mlflow_uri,
        "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")]),
    }
    if os.environ.get("DAGSTER_HOME"):
        env["DAGSTER_HOME"] = os.environ["DAGSTER_HOME"]
    return env


def build_definitions(lab: Lab) -> Definitions:
    return Definitions(
        assets=build_assets(lab),
        jobs=build_jobs(),
        resources={STAGE_CLIENT: StageClient(env=stage_environment(lab), cwd=str(lab.repo))},
        executor=multiprocess_executor.configured({"max_concurrent": MAX_CONCURRENT_STEPS}),
    )
