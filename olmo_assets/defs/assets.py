"""The lab's assets: one per artifact, each a thin launch of the stage command through Pipes.

Built from :data:`olmo_assets.defs.catalog.ARTIFACTS` for one :class:`Lab`: the partitions
come from ``params.yaml`` (sources, ``eval.checkpoints``, ``eval.tasks``), each asset's code
version hashes the parameters its step reads, and each step becomes one (multi-)asset whose
body runs ``python -m olmo_assets.defs.stage <step> <partition's arguments>`` and returns
what the stage reported: materializations with metadata and data versions, and check results.

(No ``from __future__ import annotations``: Dagster reads the ``context`` annotation.)
"""

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

from dagster import (
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    BetaWarning,
    IdentityPartitionMapping,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    PartitionMapping,
    PartitionsDefinition,
    StaticPartitionsDefinition,
    multi_asset,
)

from olmo_assets.defs.catalog import (
    ARTIFACTS,
    CHECKPOINT_DIMENSION,
    TASK_DIMENSION,
    Artifact,
    Partitioning,
    artifact,
    artifacts_of,
    code_version,
    step_arguments,
)
from olmo_assets.defs.launch import StageClient, stage_command
from olmo_assets.lab.params import Lab
from olmo_assets.lab.steps import STEPS

__all__ = [
    "CHECK_DESCRIPTIONS",
    "STAGE_CLIENT",
    "TRAINING_POOL",
    "TRAINING_TAG",
    "LabPartitions",
    "build_assets",
]

STAGE_CLIENT = "stage_client"
"""The resource key of the :class:`~olmo_assets.defs.launch.StageClient`."""
TRAINING_TAG = "olmo/training"
"""Tag on the training op and jobs: the instance allows one run with it at a time."""
TRAINING_POOL = "olmo_training"
"""Concurrency pool of the training op (``dagster instance concurrency set olmo_training 1``,
or ``concurrency: pools: default_limit: 1`` in dagster.yaml): one training op at a time,
from any run, ad-hoc materializations included."""

CHECK_DESCRIPTIONS = {
    "accounting": "Every input record is kept, held out for validation, removed or quarantined.",
    "no_contamination_left": "No kept document is flagged as contaminated by evaluation data.",
    "shards_readable": "Every shard memory-maps and every token id is inside the vocabulary.",
    "losses_finite": "Every logged training loss is finite.",
    "rows_complete": "Every expected evaluation row is there, complete and finite.",
}


@dataclass(frozen=True)
class LabPartitions:
    """The partitions ``params.yaml`` defines."""

    source: StaticPartitionsDefinition
    checkpoint: StaticPartitionsDefinition
    checkpoint_task: MultiPartitionsDefinition

    @classmethod
    def of(cls, lab: Lab) -> "LabPartitions":
        checkpoint = StaticPartitionsDefinition([str(s) for s in lab.params.eval.checkpoints])
        task = StaticPartitionsDefinition(list(lab.params.eval.tasks))
        return cls(
            source=StaticPartitionsDefinition(list(lab.params.sources)),
            checkpoint=checkpoint,
            checkpoint_task=MultiPartitionsDefinition(
                {CHECKPOINT_DIMENSION: checkpoint, TASK_DIMENSION: task}
            ),
        )

    def of_artifact(self, item: Artifact) -> PartitionsDefinition | None:
        return {
            None: None,
            Partitioning.SOURCE: self.source,
            Partitioning.CHECKPOINT: self.checkpoint,
            Partitioning.CHECKPOINT_TASK: self.checkpoint_task,
        }[item.partitioning]


def _partition_mapping(downstream: Artifact, upstream: Artifact) -> PartitionMapping | None:
    """How a partition reads its input's partitions; ``None``: Dagster's default (all of an
    input's partitions for an unpartitioned asset)."""
    if downstream.partitioning is None or upstream.partitioning is None:
        return None
    if downstream.partitioning == upstream.partitioning:
        return IdentityPartitionMapping()
    if (downstream.partitioning, upstream.partitioning) == (
        Partitioning.CHECKPOINT_TASK,
        Partitioning.CHECKPOINT,
    ):
        with warnings.catch_warnings():  # a beta API, and the one that says this
            warnings.simplefilter("ignore", BetaWarning)
            return MultiToSingleDimensionPartitionMapping(
                partition_dimension_name=CHECKPOINT_DIMENSION
            )
    raise ValueError(f"no partition mapping from {downstream.key} to {upstream.key}")


def _spec(lab: Lab, item: Artifact, partitions: LabPartitions) -> AssetSpec:
    names = STEPS[item.step].arguments if item.step in STEPS else ()
    arguments = " ".join(f"<{name}>" for name in names)
    return AssetSpec(
        key=item.key,
        deps=[
            AssetDep(dep, partition_mapping=_partition_mapping(item, artifact(dep)))
            for dep in item.deps
        ],
        description=item.description,
        group_name=item.group,
        code_version=code_version(lab, item.step),
        partitions_def=partitions.of_artifact(item),
        metadata={"stage": f"python -m olmo_assets.defs.stage {item.step} {arguments}".strip()},
    )


def _stage_asset(lab: Lab, step: str, partitions: LabPartitions) -> AssetsDefinition:
    items = artifacts_of(step)
    primary = items[0]
    training = step == "train"
    check_specs = [
        AssetCheckSpec(name, asset=item.key, description=CHECK_DESCRIPTIONS[name], blocking=True)
        for item in items
        for name in item.checks
    ]
    env: Mapping[str, str] = {"OLMO_LAB_REPO": str(lab.repo)}

    @multi_asset(
        name=primary.key,
        specs=[_spec(lab, item, partitions) for item in items],
        check_specs=check_specs,
        partitions_def=partitions.of_artifact(primary),
        op_tags={TRAINING_TAG: "1"} if training else None,
        pool=TRAINING_POOL if training else None,
        required_resource_keys={STAGE_CLIENT},
    )
    def stage_asset(context: AssetExecutionContext):
        key = context.partition_key if context.has_partition_key else None
        command = stage_command(step, step_arguments(primary, key))
        client: StageClient = getattr(context.resources, STAGE_CLIENT)
        return client.run(context=context, command=command, env=env).get_results()

    return stage_asset


def build_assets(lab: Lab) -> list[AssetsDefinition]:
    """Every artifact's asset, one (multi-)asset per step, in pipeline order."""
    partitions = LabPartitions.of(lab)
    steps = list(dict.fromkeys(item.step for item in ARTIFACTS))
    return [_stage_asset(lab, step, partitions) for step in steps]
