"""The code location for one lab: assets, jobs, the Pipes client and the executor.

``olmo_assets.definitions`` (named by ``workspace.yaml``) calls :func:`build_definitions`
for the repository's lab; tests call it for a small copy.

Jobs: one per group for its stages that run once (``curation``: dedup, mix, the corpus
report; ``tokenization``: the tokenizer; ``training``: the run; ``evaluation``: the model
report), one per partitioned stage (``training_checkpoint``, ``evaluation_downstream``,
``evaluation_perplexity``), and one per source and group for its shard stages
(``curation_shards_web``: the raw shard and its attributes; ``tokenization_shards_web``: the
shard's token shards, after the mix), launched per partition or as a backfill. Keeping them apart
means a partition's run never reruns the training or rebuilds the model report from half the
results. The asset graph's "Materialize all" launches a backfill over everything, in
dependency order.

A partitioned stage's job runs its one step in the run's process (the in-process executor);
the group jobs run up to two steps at once (the multiprocess executor).

Training carries the ``olmo/training`` run tag, which the instance limits to one run at a
time (``.dagster/dagster.yaml``); its op is in the ``olmo_training`` pool, which covers
ad-hoc materializations too.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from dagster import (
    AssetKey,
    AssetSelection,
    Definitions,
    PipesSubprocessClient,
    define_asset_job,
    in_process_executor,
    multiprocess_executor,
)

from olmo_assets.defs.assets import STAGE_CLIENT, TRAINING_TAG, asset_key, build_assets, launch
from olmo_assets.lab.database import dagster_home
from olmo_assets.lab.params import Lab
from olmo_assets.lab.pipeline import STAGES, Fanout, Stage

__all__ = [
    "MAX_CONCURRENT_STEPS",
    "build_definitions",
    "build_jobs",
    "job_name",
    "stage_environment",
]

MAX_CONCURRENT_STEPS = 2
"""Steps a run executes at once (the multiprocess executor); curation steps use workers too."""


def _keys(lab: Lab, stages: list[Stage], source: str | None = None) -> list[AssetKey]:
    return [asset_key(artifact, source) for stage in stages for artifact in stage.writes]


_PARTITIONED = (Fanout.CHECKPOINT, Fanout.CHECKPOINT_TASK)


def job_name(stage: Stage, source: str | None = None) -> str:
    """The job a stage runs in: its group's (``curation``); its own when partitioned
    (``evaluation_downstream``); its source's when it runs per shard (``curation_shards_web``:
    the source's shard stages, which share its partitions)."""
    if stage.fanout is Fanout.SHARD:
        if source is None:
            raise ValueError(f"stage {stage.name} runs per source shard: name the source")
        return f"{stage.group}_shards_" + re.sub(r"\W", "_", source)
    return f"{stage.group}_{stage.name}" if stage.fanout in _PARTITIONED else stage.group


def build_jobs(lab: Lab) -> list[Any]:
    """A job per group for its stages that run once, a job per partitioned stage, and a job
    per source for its shard stages, named by :func:`job_name` (see the module's docstring)."""
    jobs = []
    for group in dict.fromkeys(stage.group for stage in STAGES):
        stages = [s for s in STAGES if s.group == group]
        members: list[tuple[list[Stage], str | None]] = [
            ([s for s in stages if s.fanout is Fanout.ONCE], None)
        ]
        members += [([s], None) for s in stages if s.fanout in _PARTITIONED]
        shard_stages = [s for s in stages if s.fanout is Fanout.SHARD]
        if shard_stages:
            members += [(shard_stages, source) for source in lab.params.sources]
        for chosen, source in members:
            if not chosen:
                continue
            partitioned = chosen[0].fanout is not Fanout.ONCE
            jobs.append(
                define_asset_job(
                    job_name(chosen[0], source),
                    AssetSelection.assets(*_keys(lab, chosen, source)),
                    description="Stages "
                    + ", ".join(s.name for s in chosen)
                    + (f" of source {source!r}, shard by shard." if source else "."),
                    tags={TRAINING_TAG: "1"} if any(s.name == "train" for s in chosen) else None,
                    # A partition's run is its stages' steps: run them in the run's own
                    # process rather than start another for each.
                    executor_def=in_process_executor if partitioned else None,
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
        env["DAGSTER_HOME"] = str(dagster_home(lab.repo))
    return env


def build_definitions(lab: Lab) -> Definitions:
    env = stage_environment(lab)
    from olmo_assets.defs.checkpoints import new_checkpoints_sensor
    from olmo_assets.defs.sources import new_shards_sensor

    jobs = build_jobs(lab)
    sensors = [new_shards_sensor(lab)]
    if lab.params.eval.continuous:
        sensors.append(new_checkpoints_sensor(lab, jobs))
    return Definitions(
        assets=build_assets(lab, launch(env), frozenset({STAGE_CLIENT})),
        jobs=jobs,
        sensors=sensors,
        resources={STAGE_CLIENT: PipesSubprocessClient(env=env, cwd=str(lab.repo))},
        executor=multiprocess_executor.configured({"max_concurrent": MAX_CONCURRENT_STEPS}),
    )
