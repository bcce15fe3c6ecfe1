"""Registering a lab's shards with Dagster: partitions for new shards, observations of files.

``olmo lab shards`` and the ``new_shards`` sensor do the same thing (:func:`register`): plan
each source's files into shards (:mod:`olmo_assets.lab.shards`; files already planned keep
their shard), write ``sources/shards.yaml`` and ``sources/dvc.yaml`` when the plan changed,
add each new shard as a partition of its source (``shards_<source>``), and observe every file
source's shards: a shard whose files changed (size, ETag or modification time) gets a new
data version on ``source_files/<source>``, so Dagster shows that shard's raw source and what
was made from it as stale, and nothing else.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from dagster import (
    AssetKey,
    AssetObservation,
    AssetRecordsFilter,
    DagsterInstance,
    DefaultSensorStatus,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from olmo_assets.defs.assets import SOURCE_FILES, shard_partitions
from olmo_assets.lab.dvcyaml import sources_dvc_yaml
from olmo_assets.lab.params import Lab
from olmo_assets.lab.pipeline import SOURCES_DVC_YAML
from olmo_assets.lab.shards import ShardPlan, plan_shards, shard_version
from olmo_nn.atomic import temporary_name

__all__ = ["Registered", "new_shards_sensor", "register", "write_plan"]

DATA_VERSION_TAG = "dagster/data_version"
"""The tag that carries an observation's data version (Dagster's own)."""


@dataclass
class Registered:
    """What one registration did."""

    added: dict[str, list[str]] = field(default_factory=dict)
    """New shards per source (new partitions)."""
    changed: list[tuple[str, str]] = field(default_factory=list)
    """(source, shard) whose files have a new data version (observed): every file shard the
    first time, then those with a new or changed file."""
    written: bool = False
    """Whether ``sources/shards.yaml`` and ``sources/dvc.yaml`` were rewritten."""

    def summary(self) -> str:
        new = [f"{s}/{k}" for s, keys in self.added.items() for k in keys]
        parts = [f"new shards: {', '.join(new) or 'none'}"]
        changed = ", ".join(f"{s}/{k}" for s, k in self.changed) or "none"
        parts.append(f"new file versions in: {changed}")
        return "; ".join(parts)


@contextmanager
def _plan_lock(lab: Lab) -> Iterator[None]:
    """One registration at a time (the sensor and ``olmo lab shards``)."""
    lab.shards_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lab.shards_file.parent / ".shards.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_plan(lab: Lab, plan: ShardPlan) -> bool:
    """Write the plan and ``sources/dvc.yaml`` when either differs from what is there."""
    texts = {
        lab.shards_file: plan.to_yaml(),
        lab.repo / SOURCES_DVC_YAML: sources_dvc_yaml(lab, plan),
    }
    changed = False
    for path, text in texts.items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            staged = temporary_name(path)
            staged.write_text(text, encoding="utf-8")
            staged.replace(path)
            changed = True
    lab._plan = plan
    return changed


def _latest_version(instance: DagsterInstance, key: AssetKey, shard: str) -> str | None:
    records = instance.fetch_observations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[shard]), limit=1
    ).records
    if not records or records[0].asset_observation is None:
        return None
    return records[0].asset_observation.tags.get(DATA_VERSION_TAG)


def register(lab: Lab, instance: DagsterInstance | None) -> Registered:
    """Plan, write, and (with an instance) add new partitions and observe changed files."""
    with _plan_lock(lab):
        plan, added, listed = plan_shards(lab)
        done = Registered(added={s: keys for s, keys in added.items() if keys})
        done.written = write_plan(lab, plan)
    if instance is None:
        return done
    for source, shards in plan.files.items():
        name = shard_partitions(source).name
        assert name is not None
        missing = [k for k in sorted(shards) if not instance.has_dynamic_partition(name, k)]
        if missing:
            instance.add_dynamic_partitions(name, missing)
        if lab.params.sources[source].built_in:
            continue
        key = AssetKey([SOURCE_FILES, source])
        for shard in sorted(shards):
            # From the listing just made: one listing per source, no request per file.
            version = shard_version(lab, plan.urls(source, shard), listed)
            if _latest_version(instance, key, shard) != version:
                instance.report_runless_asset_event(
                    AssetObservation(key, partition=shard, tags={DATA_VERSION_TAG: version})
                )
                done.changed.append((source, shard))
    return done


def new_shards_sensor(lab: Lab) -> SensorDefinition:
    """``new_shards``: every minute, register the lab's shards (see :func:`register`)."""

    @sensor(
        name="new_shards",
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        description="Lists each source's files: new files become new shards (partitions); "
        "a changed file gives its shard a new data version. Writes sources/shards.yaml and "
        "sources/dvc.yaml when the plan changes.",
    )
    def new_shards(context: SensorEvaluationContext) -> SkipReason:
        done = register(Lab.load(lab.repo), context.instance)
        context.log.info(done.summary())
        return SkipReason(done.summary())

    return new_shards
