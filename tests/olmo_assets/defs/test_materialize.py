"""A small graph materializes in-process: raw_source[prose] -> attributes[prose] via Pipes."""

from __future__ import annotations

import pytest
from dagster import AssetKey, AssetsDefinition, instance_for_test, materialize

from olmo_assets.defs.assets import STAGE_CLIENT, build_assets
from olmo_assets.defs.catalog import code_version
from olmo_assets.defs.launch import StageClient
from olmo_assets.defs.location import stage_environment
from olmo_assets.lab.hashing import dvc_md5
from olmo_assets.lab.params import Lab

# Dagster's own Pipes internals warn about its preview and deprecated APIs.
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*expected_writer_count:dagster.PreviewWarning",
    "ignore:AssetExecutionContext.run_id is deprecated:DeprecationWarning",
)


def _assets(lab: Lab, *keys: str) -> list[AssetsDefinition]:
    by_key = {key: assets for assets in build_assets(lab) for key in assets.keys}
    return [by_key[AssetKey(key)] for key in keys]


def _resources(lab: Lab) -> dict[str, StageClient]:
    return {STAGE_CLIENT: StageClient(env=stage_environment(lab), cwd=str(lab.repo))}


def test_source_and_its_attributes_materialize_with_metadata_and_dvc_hashes(
    small_lab: Lab,
) -> None:
    with instance_for_test() as instance:
        result = materialize(
            _assets(small_lab, "raw_source", "attributes"),
            instance=instance,
            partition_key="prose",
            resources=_resources(small_lab),
        )
        assert result.success
        events = {
            e.materialization.asset_key.to_user_string(): e.materialization
            for e in result.get_asset_materialization_events()
        }
        assert set(events) == {"raw_source", "attributes"}
        raw, attributes = events["raw_source"], events["attributes"]
        assert raw.partition == attributes.partition == "prose"
        assert raw.tags is not None and attributes.tags is not None

        # The data version is DVC's content hash of the folder; the code version the params'.
        assert raw.tags["dagster/data_version"] == dvc_md5(small_lab.raw("prose"))
        assert attributes.tags["dagster/data_version"] == dvc_md5(small_lab.tagged("prose"))
        assert attributes.tags["dagster/code_version"] == code_version(small_lab, "tag")
        assert "dagster/input_event_pointer/raw_source" in attributes.tags

        assert int(str(raw.metadata["documents"].value)) > 0
        assert raw.metadata["dvc_md5"].value == raw.tags["dagster/data_version"]
        assert small_lab.repo / str(raw.metadata["path"].value) == small_lab.raw("prose")
        assert attributes.metadata["input_records"].value == raw.metadata["documents"].value
        assert str(attributes.metadata["counts_table"].value).startswith("| source |")
        assert attributes.metadata["command"].value == "python -m olmo_assets.defs.stage tag prose"
        assert len(str(attributes.metadata["git_commit"].value)) == 40

        (check,) = result.get_asset_check_evaluations()
        assert (check.asset_key, check.check_name, check.passed) == (
            AssetKey("attributes"),
            "accounting",
            True,
        )
        latest = instance.get_latest_materialization_event(AssetKey("attributes"))
        assert latest is not None and latest.asset_materialization is not None
        assert latest.asset_materialization.partition == "prose"


def test_a_missing_source_fails_its_asset_naming_the_path(small_lab: Lab) -> None:
    with instance_for_test() as instance:
        result = materialize(
            _assets(small_lab, "attributes"),
            instance=instance,
            partition_key="code",
            resources=_resources(small_lab),
            raise_on_error=False,
        )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    error = failure.step_failure_data.error
    assert error is not None
    assert str(small_lab.raw("code")) in error.to_string()
