"""The stage command outside Dagster (as ``dvc repro`` runs it) records runless events that the
instance shows as the latest materializations, the same record a Pipes run leaves."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    materialize,
)
from dagster._core.event_api import EventLogRecord
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from olmo_assets.defs.assets import STAGE_CLIENT, build_assets
from olmo_assets.defs.catalog import code_version
from olmo_assets.defs.launch import StageClient
from olmo_assets.defs.location import stage_environment as pipes_environment
from olmo_assets.lab.hashing import dvc_md5
from olmo_assets.lab.params import Lab

from .conftest import run_stage

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*expected_writer_count:dagster.PreviewWarning",
    "ignore:AssetExecutionContext.run_id is deprecated:DeprecationWarning",
)


def latest(instance: DagsterInstance, key: str, partition: str) -> EventLogRecord:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(key), asset_partitions=[partition]), limit=1
    ).records
    assert records, f"no materialization of {key}[{partition}]"
    return records[0]


def test_stage_records_runless_materializations_and_checks(
    small_lab: Lab, dagster_home: Path
) -> None:
    for arguments in (("source", "prose"), ("tag", "prose")):
        done = run_stage(small_lab, dagster_home, *arguments)
        assert done.returncode == 0, done.stderr
    assert "attributes[prose]: data version" in done.stdout

    with DagsterInstance.get() as instance:
        record = latest(instance, "attributes", "prose")
        assert record.run_id == ""  # runless: no Dagster run made it
        event = record.asset_materialization
        assert event is not None and event.tags is not None
        assert event.tags["dagster/data_version"] == dvc_md5(small_lab.tagged("prose"))
        assert event.tags["dagster/code_version"] == code_version(small_lab, "tag")
        assert int(str(event.metadata["input_records"].value)) > 0
        assert event.metadata["command"].value == "python -m olmo_assets.defs.stage tag prose"
        newest = instance.get_latest_materialization_event(AssetKey("attributes"))
        assert newest is not None and newest.tags == event.tags

        (check,) = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(AssetKey("attributes"), "accounting"), limit=1
        )
        assert check.status == AssetCheckExecutionRecordStatus.SUCCEEDED

        # One pipeline, two entry points: a Pipes run of the same step leaves the same record.
        runless = latest(instance, "raw_source", "prose").asset_materialization
        by_key = {key: assets for assets in build_assets(small_lab) for key in assets.keys}
        result = materialize(
            [by_key[AssetKey("raw_source")]],
            instance=instance,
            partition_key="prose",
            resources={STAGE_CLIENT: StageClient(env=pipes_environment(small_lab))},
        )
        assert result.success
        piped = latest(instance, "raw_source", "prose")
        assert piped.run_id == result.run_id
        assert piped.asset_materialization is not None and runless is not None
        piped_tags, runless_tags = piped.asset_materialization.tags or {}, runless.tags or {}
        for tag in ("dagster/data_version", "dagster/code_version"):
            assert piped_tags[tag] == runless_tags[tag]
        assert set(piped.asset_materialization.metadata) == set(runless.metadata)


def test_stage_failures_name_the_cause(small_lab: Lab, dagster_home: Path) -> None:
    missing = run_stage(small_lab, dagster_home, "tag", "code")
    assert missing.returncode == 1
    assert str(small_lab.raw("code")) in missing.stderr
    assert "Traceback" not in missing.stderr

    unknown = run_stage(small_lab, dagster_home, "source", "nope")
    assert unknown.returncode == 1
    assert "unknown source 'nope'; params.yaml names code, prose" in unknown.stderr
