"""A small graph materializes in-process through Pipes: raw_source/prose -> attributes/prose."""

from __future__ import annotations

import hashlib

import pytest
from dagster import (
    AssetKey,
    AssetsDefinition,
    PipesSubprocessClient,
    instance_for_test,
    materialize,
)

from olmo_assets.defs.assets import STAGE_CLIENT, build_assets, launch
from olmo_assets.defs.location import stage_environment
from olmo_assets.lab.hashing import dvc_md5
from olmo_assets.lab.params import Lab
from olmo_assets.lab.pipeline import StageRun, code_version, stage_named
from olmo_assets.lab.shards import BUILT_IN_SHARD as SHARD

# Dagster's own Pipes internals warn about its preview and deprecated APIs.
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*expected_writer_count:dagster.PreviewWarning",
    "ignore:AssetExecutionContext.run_id is deprecated:DeprecationWarning",
)


def pipes_assets(lab: Lab, *keys: str) -> tuple[list[AssetsDefinition], dict]:
    """The lab's assets launching through Pipes, and the resources they need."""
    env = stage_environment(lab)
    assets = build_assets(lab, launch(env), frozenset({STAGE_CLIENT}))
    by_key = {key.to_user_string(): a for a in assets for key in a.keys}
    resources = {STAGE_CLIENT: PipesSubprocessClient(env=env, cwd=str(lab.repo))}
    return [by_key[key] for key in keys], resources


def test_source_and_its_attributes_materialize_with_metadata_and_dvc_hashes(
    small_lab: Lab,
) -> None:
    assets, resources = pipes_assets(small_lab, "raw_source/prose", "attributes/prose")
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("shards_prose", [SHARD])
        result = materialize(assets, instance=instance, resources=resources, partition_key=SHARD)
        assert result.success
        events = {
            e.materialization.asset_key.to_user_string(): e.materialization
            for e in result.get_asset_materialization_events()
        }
        assert set(events) == {"raw_source/prose", "attributes/prose"}
        raw, attributes = events["raw_source/prose"], events["attributes/prose"]
        assert raw.tags is not None and attributes.tags is not None

        # The data version is DVC's content hash of the folder; the code version hashes
        # what DVC tracks for the stage.
        assert raw.tags["dagster/data_version"] == dvc_md5(small_lab.raw("prose", SHARD))
        assert attributes.tags["dagster/data_version"] == dvc_md5(small_lab.tagged("prose", SHARD))
        tag = StageRun(stage_named("tag"), ("prose", SHARD))
        assert attributes.tags["dagster/code_version"] == code_version(small_lab, tag)
        # (A partitioned input's version is Dagster's hash over the partitions read.)
        read = hashlib.sha256(raw.tags["dagster/data_version"].encode()).hexdigest()
        assert attributes.tags["dagster/input_data_version/raw_source/prose"] == read

        assert int(str(raw.metadata["documents"].value)) > 0
        assert raw.metadata["dvc_md5"].value == raw.tags["dagster/data_version"]
        assert small_lab.repo / str(raw.metadata["path"].value) == small_lab.raw("prose", SHARD)
        assert attributes.metadata["input_records"].value == raw.metadata["documents"].value
        counts = attributes.metadata["counts"].value
        assert [c.name for c in counts.schema.columns] == [
            "source",
            "input_records",
            "passed",
            "quarantined",
        ]
        assert [r.data["source"] for r in counts.records] == ["prose"]
        assert (
            attributes.metadata["command"].value
            == "python -m olmo_assets.defs.stage tag prose 00000"
        )
        assert len(str(attributes.metadata["git_commit"].value)) == 40

        checks = {
            (c.asset_key, c.check_name, c.passed) for c in result.get_asset_check_evaluations()
        }
        assert checks == {
            (AssetKey(["raw_source", "prose"]), "accounting", True),
            (AssetKey(["attributes", "prose"]), "accounting", True),
        }


def test_a_missing_source_fails_its_asset_naming_the_path(small_lab: Lab) -> None:
    assets, resources = pipes_assets(small_lab, "attributes/code")
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("shards_code", [SHARD])
        result = materialize(
            assets,
            instance=instance,
            resources=resources,
            partition_key=SHARD,
            raise_on_error=False,
        )
        assert not result.success
        logs = "\n".join(str(record.user_message) for record in instance.all_logs(result.run_id))
    assert str(small_lab.raw("code", SHARD)) in logs
