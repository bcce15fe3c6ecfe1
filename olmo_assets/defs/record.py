"""Recording a step run outside Dagster: runless events in the instance at ``$DAGSTER_HOME``.

When ``dvc repro`` (or a shell) runs the stage command, no Dagster run exists; the stage
records what Dagster itself would have recorded: an ``AssetMaterialization`` per artifact (on
the asset key and partition the definitions use) with the same metadata, the data version
(DVC's content hash) and the provenance tags Dagster's staleness reads (code version, the
inputs' data versions and event pointers), then an ``AssetCheckEvaluation`` per check. The UI
then shows these materializations like any other and computes staleness from them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olmo_assets.defs.catalog import CHECKPOINT_DIMENSION, TASK_DIMENSION, Artifact, Partitioning
from olmo_assets.defs.metadata import Entries, to_dagster
from olmo_assets.lab.params import Lab

if TYPE_CHECKING:
    from dagster import DagsterInstance

__all__ = ["CheckRecord", "MaterializationRecord", "dagster_instance", "record_runless"]

# Dagster's provenance tags (dagster._core.definitions.data_version): what a run writes on
# every materialization, and what the stale-status resolver reads back.
CODE_VERSION_TAG = "dagster/code_version"
DATA_VERSION_TAG = "dagster/data_version"
DATA_VERSION_IS_USER_PROVIDED_TAG = "dagster/data_version_is_user_provided"
INPUT_DATA_VERSION_TAG_PREFIX = "dagster/input_data_version"
INPUT_EVENT_POINTER_TAG_PREFIX = "dagster/input_event_pointer"
MULTI_PARTITION_TAG_PREFIX = "dagster/partition"
NULL_EVENT_POINTER = "NULL"
INITIAL_DATA_VERSION = "INITIAL"


@dataclass
class MaterializationRecord:
    artifact: Artifact
    partition: str | None
    data_version: str
    code_version: str
    metadata: Entries


@dataclass
class CheckRecord:
    artifact: Artifact
    name: str
    passed: bool
    description: str
    metadata: Entries


def dagster_instance(lab: Lab) -> DagsterInstance:
    """The instance at ``$DAGSTER_HOME``; unset, it is ``<repo>/.dagster`` (created if needed)."""
    from dagster import DagsterInstance

    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(lab.repo / ".dagster")
    home = Path(os.environ["DAGSTER_HOME"])
    if not home.is_absolute():
        raise ValueError(f"DAGSTER_HOME={home} must be an absolute path")
    home.mkdir(parents=True, exist_ok=True)
    return DagsterInstance.get()


def _dagster_partition(artifact: Artifact, partition: str | None) -> Any:
    from dagster import MultiPartitionKey

    if partition is None or artifact.partitioning != Partitioning.CHECKPOINT_TASK:
        return partition
    checkpoint, task = partition.split("|")
    return MultiPartitionKey({CHECKPOINT_DIMENSION: checkpoint, TASK_DIMENSION: task})


def _input_provenance(
    instance: DagsterInstance, artifact: Artifact, partition: str | None
) -> dict[str, str]:
    """The inputs' data versions and latest event ids, as a Dagster run records them."""
    from dagster import AssetKey, AssetRecordsFilter

    from olmo_assets.defs.catalog import artifact as artifact_named

    tags = {}
    for dep in artifact.deps:
        key = AssetKey(dep)
        latest = instance.get_latest_materialization_event(key)
        records = instance.get_asset_records([key])
        pointer = NULL_EVENT_POINTER
        if records and records[0].asset_entry.last_materialization_record is not None:
            pointer = str(records[0].asset_entry.last_materialization_record.storage_id)
        # An input partitioned like this artifact (identity) is read at this very partition.
        upstream = artifact_named(dep)
        if partition is not None and upstream.partitioning == artifact.partitioning:
            found = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
            ).records
            latest = found[0].event_log_entry if found else None
        version = (latest.tags or {}).get(DATA_VERSION_TAG) if latest is not None else None
        tags[f"{INPUT_DATA_VERSION_TAG_PREFIX}/{dep}"] = version or INITIAL_DATA_VERSION
        tags[f"{INPUT_EVENT_POINTER_TAG_PREFIX}/{dep}"] = pointer
    return tags


def record_runless(
    instance: DagsterInstance,
    materializations: list[MaterializationRecord],
    checks: list[CheckRecord],
) -> None:
    """Report the materializations, then each check against its artifact's new event."""
    from dagster import (
        AssetCheckEvaluation,
        AssetCheckSeverity,
        AssetKey,
        AssetMaterialization,
        AssetRecordsFilter,
    )

    # Not exported by `dagster`; ties a check result to the materialization it judged.
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    targets = {}
    for record in materializations:
        artifact, partition = record.artifact, record.partition
        tags = {
            CODE_VERSION_TAG: record.code_version,
            **_input_provenance(instance, artifact, partition),
            DATA_VERSION_TAG: record.data_version,
            DATA_VERSION_IS_USER_PROVIDED_TAG: "true",
        }
        dagster_partition = _dagster_partition(artifact, partition)
        if artifact.partitioning == Partitioning.CHECKPOINT_TASK:
            tags |= {
                f"{MULTI_PARTITION_TAG_PREFIX}/{dimension}": key
                for dimension, key in dagster_partition.keys_by_dimension.items()
            }
        key = AssetKey(artifact.key)
        instance.report_runless_asset_event(
            AssetMaterialization(
                asset_key=key,
                partition=dagster_partition,
                metadata=to_dagster(record.metadata),
                tags=tags,
            )
        )
        latest = instance.fetch_materializations(
            AssetRecordsFilter(
                asset_key=key, asset_partitions=[partition] if partition is not None else None
            ),
            limit=1,
        ).records[0]
        targets[artifact.key] = AssetCheckEvaluationTargetMaterializationData(
            storage_id=latest.storage_id, run_id=latest.run_id, timestamp=latest.timestamp
        )
    for check in checks:
        instance.report_runless_asset_event(
            AssetCheckEvaluation(
                asset_key=AssetKey(check.artifact.key),
                check_name=check.name,
                passed=check.passed,
                metadata=to_dagster(check.metadata),
                target_materialization_data=targets.get(check.artifact.key),
                severity=AssetCheckSeverity.ERROR,
                description=check.description,
                blocking=True,
            )
        )
