"""The lab's assets, built from the pipeline's declaration (:mod:`olmo_assets.lab.pipeline`).

One (multi-)asset per stage, and per source for the per-shard stages (each source has its
own parameters, so its own code version); a source's shards, checkpoints and checkpoint ×
task are partitions. A source's shards are dynamic partitions (``shards_<source>``): the
shard plan registers them (:mod:`olmo_assets.defs.sources`), so a new file makes a new
partition without a change to the definitions. A source read from files has an observable
source asset (``source_files/<source>``, same partitions) whose data version is what its
files are now: when one changes, the shard that read it and everything after are stale.
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
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import (
    AllPartitionMapping,
    AssetCheckResult,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    BetaWarning,
    DataVersion,
    DataVersionsByPartition,
    DynamicPartitionsDefinition,
    Failure,
    MaterializeResult,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    PartitionMapping,
    PartitionsDefinition,
    PipesSubprocessClient,
    PreviewWarning,
    SourceAsset,
    StaticPartitionsDefinition,
    multi_asset,
    observable_source_asset,
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
from olmo_assets.lab.processes import FAILURE_FILE, LAUNCHER_PID
from olmo_assets.lab.shards import shard_version

# Dagster's own Pipes session reads a preview property of its message reader; the warning
# says nothing about this code and would repeat on every stage.
warnings.filterwarnings("ignore", "Function `PipesMessageReader", PreviewWarning)
# Observable source assets (a source's files) are a beta API; the warning would repeat on
# every stage.
warnings.filterwarnings("ignore", "Function `observable_source_asset", BetaWarning)

__all__ = [
    "CHECKPOINT_DIMENSION",
    "SOURCE_FILES",
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
SOURCE_FILES = "source_files"
"""The observable source asset of a source's own files: ``source_files/<source>``."""

Body = Callable[[AssetExecutionContext, StageRun], Iterable[MaterializeResult | AssetCheckResult]]
"""What a stage's asset does when it executes, given the run (stage and arguments)."""


def shard_partitions(source: str) -> DynamicPartitionsDefinition:
    """A source's shards: dynamic partitions named ``shards_<source>``."""
    return DynamicPartitionsDefinition(name="shards_" + re.sub(r"\W", "_", source))


@dataclass(frozen=True)
class LabPartitions:
    """The partitions ``params.yaml`` defines: checkpoints, and checkpoint × task; and each
    source's shards (registered from the shard plan)."""

    checkpoint: StaticPartitionsDefinition | DynamicPartitionsDefinition
    checkpoint_task: MultiPartitionsDefinition

    @classmethod
    def of(cls, lab: Lab) -> "LabPartitions":
        """``eval.checkpoints``; with ``eval.continuous``, every checkpoint the training run
        keeps, registered as it appears (:mod:`olmo_assets.defs.checkpoints`)."""
        checkpoint: StaticPartitionsDefinition | DynamicPartitionsDefinition
        if lab.params.eval.continuous:
            from olmo_assets.defs.checkpoints import checkpoint_partitions

            checkpoint = checkpoint_partitions()
        else:
            checkpoint = StaticPartitionsDefinition([str(s) for s in lab.params.eval.checkpoints])
        task = StaticPartitionsDefinition(list(lab.params.eval.tasks))
        return cls(
            checkpoint,
            MultiPartitionsDefinition({CHECKPOINT_DIMENSION: checkpoint, TASK_DIMENSION: task}),
        )

    def of_fanout(self, fanout: Fanout, source: str | None = None) -> PartitionsDefinition | None:
        if fanout is Fanout.SHARD:
            assert source is not None
            return shard_partitions(source)
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
    if stage.fanout is Fanout.SHARD:
        if source is None:
            raise ValueError(f"stage {stage.name} runs per source shard: name the source")
        return StageRun(stage, (source, partition or "<shard>"))
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
    if stage.reads_files and source is not None and not lab.params.sources[source].built_in:
        deps.append(AssetDep(AssetKey([SOURCE_FILES, source])))
    for read in stage.reads:
        upstream, artifact = artifact_named(read.artifact)
        if upstream.fanout is Fanout.SHARD and read.every:
            # Every shard of every source, whatever this asset's own partitions.
            deps += [
                AssetDep(asset_key(artifact, s), partition_mapping=AllPartitionMapping())
                for s in lab.params.sources
            ]
        elif upstream.fanout is Fanout.SHARD:
            deps.append(AssetDep(asset_key(artifact, source)))
        else:
            mapping = _mapping(stage.fanout, upstream.fanout)
            deps.append(AssetDep(asset_key(artifact), partition_mapping=mapping))
    return deps


def _version(lab: Lab, stage: Stage, source: str | None) -> str:
    """The code version of a stage's asset: for one source, or for every partition alike."""
    arguments = (source, "*") if source is not None else tuple("*" for _ in stage.fanout.keys)
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
    example = (
        stage_run(stage, source, None)
        if source
        else StageRun(stage, tuple(f"<{k}>" for k in stage.fanout.keys))
    )
    metadata = {"stage": " ".join(example.command), "dvc_stage": example.dvc_name}
    specs = [
        AssetSpec(
            key=asset_key(artifact, source),
            deps=_deps(lab, stage, source),
            description=artifact.description,
            group_name=stage.group,
            code_version=version,
            partitions_def=partitions.of_fanout(stage.fanout, source),
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
        partitions_def=partitions.of_fanout(stage.fanout, source),
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
) -> list[AssetsDefinition | SourceAsset]:
    """Every stage's asset(s), in pipeline order, each executing ``body``; and the
    observable files of each source read from files."""
    partitions = LabPartitions.of(lab)
    assets: list[AssetsDefinition | SourceAsset] = [
        source_files_asset(lab, name)
        for name, spec in lab.params.sources.items()
        if not spec.built_in
    ]
    for stage in STAGES:
        sources: list[str | None] = (
            list(lab.params.sources) if stage.fanout is Fanout.SHARD else [None]
        )
        for source in sources:
            assets.append(_stage_asset(lab, stage, source, partitions, body, resource_keys))
    return assets


def source_files_asset(lab: Lab, source: str) -> SourceAsset:
    """``source_files/<source>``: the source's files, observed shard by shard (their sizes
    and fingerprints: S3 ETags, local modification times; nothing is read)."""

    @observable_source_asset(
        key=AssetKey([SOURCE_FILES, source]),
        partitions_def=shard_partitions(source),
        group_name=artifact_named("raw_source")[0].group,
        description=f"The files of source {source!r} (params.yaml sources.{source}.paths), "
        "shard by shard as the shard plan groups them; observed, never materialized.",
    )
    def observe(context: AssetExecutionContext) -> DataVersionsByPartition:
        now = Lab.load(lab.repo)
        plan = now.plan
        shards = [context.partition_key] if context.has_partition_key else plan.keys(source)
        return DataVersionsByPartition(
            {k: DataVersion(shard_version(now, plan.urls(source, k))) for k in shards}
        )

    return observe


def launch(env: Mapping[str, str]) -> Body:
    """Run the stage command through Pipes (the ``stage_client`` resource). A failed command
    fails the step with its own message (a missing input, a Slurm job's final state), not
    just its exit code."""

    def body(context: AssetExecutionContext, run: StageRun) -> Any:
        client: PipesSubprocessClient = getattr(context.resources, STAGE_CLIENT)
        command = [sys.executable, *run.command[1:]]
        with tempfile.TemporaryDirectory(prefix="olmo-stage-") as folder:
            failure = Path(folder) / "failure.txt"
            launched = {**env, LAUNCHER_PID: str(os.getpid()), FAILURE_FILE: str(failure)}
            try:
                return client.run(context=context, command=command, env=launched).get_results()
            except Exception as error:  # Pipes': "External execution process failed …"
                if not failure.is_file():
                    raise
                why = failure.read_text(encoding="utf-8")
                raise Failure(description=f"{' '.join(run.command)} failed: {why}") from error

    return body
