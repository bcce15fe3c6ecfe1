"""Registering shards with Dagster: the ``new_shards`` sensor and the files' observations."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    build_asset_context,
    build_sensor_context,
    instance_for_test,
)

from olmo_assets.defs.assets import source_files_asset
from olmo_assets.defs.sources import DATA_VERSION_TAG, new_shards_sensor
from olmo_assets.lab.params import Lab
from olmo_assets.lab.shards import shard_version

from .conftest import write_small_lab

pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")


def _write(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"id": i, "text": f"The text of document {i}."}) for i in ids]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    """A small lab whose ``web`` source is two files in the repository, a shard each."""
    root = write_small_lab(tmp_path / "repo")
    _write(root / "data" / "web" / "a.jsonl", ["a1", "a2"])
    _write(root / "data" / "web" / "b.jsonl", ["b1"])
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params["sources"]["web"] = {"paths": ["data/web/*.jsonl"], "shard_mb": 0.000001}
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return Lab.load(root)


def _versions(instance: DagsterInstance, shards: list[str]) -> list[str | None]:
    found = []
    for shard in shards:
        records = instance.fetch_observations(
            AssetRecordsFilter(
                asset_key=AssetKey(["source_files", "web"]), asset_partitions=[shard]
            ),
            limit=1,
        ).records
        event = records[0].asset_observation if records else None
        found.append(None if event is None else event.tags.get(DATA_VERSION_TAG))
    return found


def test_the_sensor_registers_new_shards_and_observes_changed_files(lab: Lab) -> None:
    sensor = new_shards_sensor(lab)
    with instance_for_test() as instance:
        first = sensor(build_sensor_context(instance=instance))
        assert str(first.skip_message) == (
            "new shards: code/00000, prose/00000, web/00000, web/00001; "
            "new file versions in: web/00000, web/00001"
        )
        assert instance.get_dynamic_partitions("shards_web") == ["00000", "00001"]
        assert instance.get_dynamic_partitions("shards_code") == ["00000"]
        # The plan names files inside the repository by their path in it.
        plan = yaml.safe_load((lab.repo / "sources" / "shards.yaml").read_text())
        assert plan["files"]["web"] == {
            "00000": ["data/web/a.jsonl"],
            "00001": ["data/web/b.jsonl"],
        }
        before = _versions(instance, ["00000", "00001"])
        assert None not in before

        # A new file is a new shard; a changed file a new data version of its shard only.
        _write(lab.repo / "data" / "web" / "c.jsonl", ["c1"])
        _write(lab.repo / "data" / "web" / "a.jsonl", ["a1", "a2", "a3"])
        os.utime(lab.repo / "data" / "web" / "a.jsonl", ns=(1, 10**18))
        second = sensor(build_sensor_context(instance=instance))
        assert str(second.skip_message) == (
            "new shards: web/00002; new file versions in: web/00000, web/00002"
        )
        assert instance.get_dynamic_partitions("shards_web") == ["00000", "00001", "00002"]
        after = _versions(instance, ["00000", "00001"])
        assert after[0] != before[0] and after[1] == before[1]

        # Nothing changed: nothing registered, nothing observed.
        third = sensor(build_sensor_context(instance=instance))
        assert str(third.skip_message) == "new shards: none; new file versions in: none"


def test_observing_the_files_gives_each_shard_its_version(lab: Lab) -> None:
    with instance_for_test() as instance:
        new_shards_sensor(lab)(build_sensor_context(instance=instance))
        loaded = Lab.load(lab.repo)
        # What the UI's *Observe* runs: the source asset's observation function.
        asset = source_files_asset(loaded, "web")
        assert asset.observe_fn is not None
        versions = asset.observe_fn(build_asset_context(partition_key="00001"))  # type: ignore[call-arg]
        assert set(versions.data_versions_by_partition) == {"00001"}
        event = versions.data_versions_by_partition["00001"]
        assert event.value == shard_version(loaded, ["data/web/b.jsonl"])
