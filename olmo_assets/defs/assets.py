"""The lab's assets, built from the pipeline's declaration (:mod:`olmo_assets.lab.pipeline`).

One (multi-)asset per stage, and per source for the per-source stages (each source has its
own parameters, so its own code version); checkpoints and checkpoint × task are partitions.
Dependencies, partition mappings, code versions and blocking checks all come from the
declaration. What the asset body does is given by the caller:

* :func:`launch` (the UI, jobs, ``make demo``): run the stage command through Dagster Pipes;
  the command reports its materializations and checks to the run;
* a replay (the stage command after ``dvc repro`` ran the step): report what was recorded, so
  Dagster itself writes the provenance (code version, input data versions) of a real run.

(No ``from __future__ import annotations``: Dagster reads the ``context`` annotation.)
"""

import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    BetaWarning,
    MaterializeResult,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    PartitionMapping,
    PartitionsDefinition,
    PipesSubprocessClient,
    PreviewWarning,
    StaticPartitionsDefinition,
    multi_asset,
)

from olmo_assets.lab.params import Lab
from olmo_assets.lab.pipeline import (
    PARTITION_SEPARATOR,
    STAGES,
    Artifact,
    Fanout,
    Stage,
    StageRun,
    artifact_named,
    code_version,
)
from olmo_assets.lab.processes import LAUNCHER_PID

# Dagster's own Pipes session reads a preview property of its message reader; the warning
# says nothing about this code and would repeat on every stage.
warnings.filterwarnings("ignore", "Function `PipesMessageReader", PreviewWarning)

__all__ = [
    "CHECKPOINT_DIMENSION",
    "STAGE_CLIENT",
    "TASK_DIMENSION",
    "TRAINING_POOL",
    "TRAINING_TAG",
    "Body",
    "LabPartitions",
    "asset_key",
    "build_assets",
    "launch",
    "stage_run",
]

STAGE_CLIENT = "stage_client"
"""The resource key of the ``PipesSubprocessClient`` that launches stage commands."""
TRAINING_TAG = "olmo/training"
"""Tag on the training op and jobs: the instance allows one run with it at a time."""
TRAINING_POOL = "olmo_training"
"""Concurrency pool of the training op (``concurrency: pools: default_limit: 1`` in
dagster.yaml): one training op at a time, ad-hoc materializations included."""
CHECKPOINT_DIMENSION = "checkpoint"
TASK_DIMENSION = "task"

Body = Callable[[AssetExecutionContext, StageRun], Iterable[MaterializeResult | AssetCheckResult]]
"""What a stage's asset does when it executes, given the run (stage and arguments)."""


@dataclass(frozen=True)
class LabPartitions:
    """The partitions ``params.yaml`` defines: checkpoints, and checkpoint × task."""

    checkpoint: StaticPartitionsDefinition
    checkpoint_task: MultiPartitionsDefinition

    @classmethod
    def of(cls, lab: Lab) -> "LabPartitions":
        checkpoint = StaticPartitionsDefinition([str(s) for s in lab.params.eval.checkpoints])
        task = StaticPartitionsDefinition(list(lab.params.eval.tasks))
        return cls(
            checkpoint,
            MultiPartitionsDefinition({CHECKPOINT_DIMENSION: checkpoint, TASK_DIMENSION: task}),
        )

    def of_fanout(self, fanout: Fanout) -> PartitionsDefinition | None:
        return {
            Fanout.CHECKPOINT: self.checkpoint,
            Fanout.CHECKPOINT_TASK: self.checkpoint_task,
        }.get(fanout)


def asset_key(artifact: Artifact, source: str | None = None) -> AssetKey:
    """``raw_source/code`` for a per-source artifact, else the artifact's name."""
    stage = artifact_named(artifact.name)[0]
    return AssetKey(list(stage_run(stage, source, None).asset_path(artifact)))


def stage_run(stage: Stage, source: str | None, partition: str | None) -> StageRun:
    """The inverse: the run behind an asset (its source) and partition."""
    if stage.fanout is Fanout.SOURCE:
        if source is None:
            raise ValueError(f"stage {stage.name} runs per source: name the source")
        return StageRun(stage, (source,))
    if partition is None:
        return StageRun(stage)
    return StageRun(stage, tuple(partition.split(PARTITION_SEPARATOR)))


def _mapping(downstream: Fanout, upstream: Fanout) -> PartitionMapping | None:
    """Checkpoint × task reads its checkpoint; anything else uses Dagster's default (the same
    partition between equal partitionings, every partition of a partitioned input)."""
    if (downstream, upstream) == (Fanout.CHECKPOINT_TASK, Fanout.CHECKPOINT):
        with warnings.catch_warnings():  # a beta API, and the one that says this
            warnings.simplefilter("ignore", BetaWarning)
            return MultiToSingleDimensionPartitionMapping(
                partition_dimension_name=CHECKPOINT_DIMENSION
            )
    return None


def _deps(lab: Lab, stage: Stage, source: str | None) -> list[AssetDep]:
    deps = []
    for read in stage.reads:
        upstream, artifact = artifact_named(read.artifact)
        if upstream.fanout is Fanout.SOURCE:
            sources = list(lab.params.sources) if read.every else [source]
            deps += [AssetDep(asset_key(artifact, s)) for s in sources]
        else:
            mapping = _mapping(stage.fanout, upstream.fanout)
            deps.append(AssetDep(asset_key(artifact), partition_mapping=mapping))
    return deps


def _version(lab: Lab, stage: Stage, source: str | None) -> str:
    """The code version of a stage's asset: for one source, or for every partition alike."""
    arguments = (source,) if source is not None else tuple("*" for _ in stage.fanout.keys)
    return code_version(lab, StageRun(stage, tuple(str(a) for a in arguments)))


def _stage_asset(
    lab: Lab,
    stage: Stage,
    source: str | None,
    partitions: LabPartitions,
    body: Body,
    resource_keys: frozenset[str],
) -> AssetsDefinition:
    version = _version(lab, stage, source)
    example = StageRun(stage, (source,) if source else tuple(f"<{k}>" for k in stage.fanout.keys))
    metadata = {"stage": " ".join(example.command), "dvc_stage": example.dvc_name}
    specs = [
        AssetSpec(
            key=asset_key(artifact, source),
            deps=_deps(lab, stage, source),
            description=artifact.description,
            group_name=stage.group,
            code_version=version,
            partitions_def=partitions.of_fanout(stage.fanout),
            metadata=metadata,
        )
        for artifact in stage.writes
    ]
    checks = [
        AssetCheckSpec(
            check.name,
            asset=asset_key(artifact, source),
            description=check.description,
            blocking=True,
        )
        for artifact, check in stage.checks
    ]
    training = stage.name == "train"
    name = stage.writes[0].name + ("__" + re.sub(r"\W", "_", source) if source else "")

    @multi_asset(
        name=name,
        specs=specs,
        check_specs=checks,
        partitions_def=partitions.of_fanout(stage.fanout),
        op_tags={TRAINING_TAG: "1"} if training else None,
        pool=TRAINING_POOL if training else None,
        required_resource_keys=set(resource_keys),
    )
    def stage_asset(context: AssetExecutionContext):
        partition = context.partition_key if context.has_partition_key else None
        return body(context, stage_run(stage, source, partition))

    return stage_asset


def build_assets(
    lab: Lab, body: Body, resource_keys: frozenset[str] = frozenset()
) -> list[AssetsDefinition]:
    """Every stage's asset(s), in pipeline order, each executing ``body``."""
    partitions = LabPartitions.of(lab)
    assets = []
    for stage in STAGES:
        sources: list[str | None] = (
            list(lab.params.sources) if stage.fanout is Fanout.SOURCE else [None]
        )
        for source in sources:
            assets.append(_stage_asset(lab, stage, source, partitions, body, resource_keys))
    return assets


def launch(env: Mapping[str, str]) -> Body:
    """Run the stage command through Pipes (the ``stage_client`` resource)."""

    def body(context: AssetExecutionContext, run: StageRun) -> Any:
        client: PipesSubprocessClient = getattr(context.resources, STAGE_CLIENT)
        command = [sys.executable, *run.command[1:]]
        launched = {**env, LAUNCHER_PID: str(os.getpid())}
        return client.run(context=context, command=command, env=launched).get_results()

    return body
