"""The code location for one lab: assets, jobs, the Pipes client and the executor.

``olmo_assets.definitions`` (named by ``workspace.yaml``) calls :func:`build_definitions`
for the repository's lab; tests call it for a small copy.

A job per group of the pipeline (``curation``, ``training``, ``evaluation``). Dagster needs a
job's partitioned assets to share one partitions definition, so a group whose stages are
partitioned differently gets a job per partitioning: ``evaluation`` (checkpoint × task, and
the model report) and ``evaluation_perplexity`` (per checkpoint). The asset graph's
"Materialize all" launches a backfill over everything, in dependency order.

Training carries the ``olmo/training`` run tag, which the instance limits to one run at a
time (``.dagster/dagster.yaml``); its op is in the ``olmo_training`` pool, which covers
ad-hoc materializations too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from dagster import (
    AssetKey,
    AssetSelection,
    Definitions,
    PipesSubprocessClient,
    define_asset_job,
    multiprocess_executor,
)

from olmo_assets.defs.assets import STAGE_CLIENT, TRAINING_TAG, asset_key, build_assets, launch
from olmo_assets.lab.params import Lab
from olmo_assets.lab.pipeline import STAGES, Fanout, Stage

__all__ = ["MAX_CONCURRENT_STEPS", "build_definitions", "build_jobs", "stage_environment"]

MAX_CONCURRENT_STEPS = 2
"""Steps a run executes at once (the multiprocess executor); curation steps use workers too."""


def _keys(lab: Lab, stages: list[Stage]) -> list[AssetKey]:
    sources = list(lab.params.sources)
    return [
        asset_key(artifact, source)
        for stage in stages
        for source in (sources if stage.fanout is Fanout.SOURCE else [None])
        for artifact in stage.writes
    ]


def build_jobs(lab: Lab) -> list[Any]:
    """A job per group and partitioning (see the module's docstring)."""
    jobs = []
    for group in dict.fromkeys(stage.group for stage in STAGES):
        stages = [s for s in STAGES if s.group == group]
        partitionings = sorted(
            {s.fanout for s in stages if s.fanout in (Fanout.CHECKPOINT, Fanout.CHECKPOINT_TASK)},
            key=lambda fanout: -len(fanout.keys),
        )
        # The group's own job: its widest partitioning, with the stages that run once or per
        # source; then a job per other partitioning.
        main = partitionings[0] if partitionings else None
        for fanout in [main, *partitionings[1:]]:
            members = [
                s
                for s in stages
                if s.fanout is fanout or (fanout is main and s.fanout not in partitionings)
            ]
            jobs.append(
                define_asset_job(
                    group if fanout is main else f"{group}_{members[0].name}",
                    AssetSelection.assets(*_keys(lab, members)),
                    description="Stages " + ", ".join(s.name for s in members) + ".",
                    tags={TRAINING_TAG: "1"} if any(s.name == "train" for s in members) else None,
                )
            )
    return jobs


def stage_environment(lab: Lab) -> dict[str, str]:
    """What the stage processes need besides the Pipes variables: the lab, MLflow's store,
    Dagster's instance, and this interpreter's scripts (torchrun) and dvc on PATH."""
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
    env = stage_environment(lab)
    return Definitions(
        assets=build_assets(lab, launch(env), frozenset({STAGE_CLIENT})),
        jobs=build_jobs(lab),
        resources={STAGE_CLIENT: PipesSubprocessClient(env=env, cwd=str(lab.repo))},
        executor=multiprocess_executor.configured({"max_concurrent": MAX_CONCURRENT_STEPS}),
    )
