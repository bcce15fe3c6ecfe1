"""The real Dagster webserver serves the workspace: asset graph and latest materializations
(recorded by the stage command from a shell, as after ``dvc repro``) through GraphQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from olmo_assets.lab.hashing import dvc_md5
from olmo_assets.lab.params import Lab
from olmo_assets.lab.shards import BUILT_IN_SHARD as SHARD

from .conftest import REPO, run_stage, stage_environment
from .test_definitions import DEPS
from .webserver import ASSET_GRAPH, graphql, webserver

LATEST = """
query Latest($keys: [AssetKeyInput!]!, $partition: String) {
  assetsLatestInfo(assetKeys: $keys) { assetKey { path } latestMaterialization { runId } }
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    assetMaterializations(limit: 1) {
      tags { key value }
      metadataEntries { label ... on TextMetadataEntry { text } }
    }
    dataVersion(partition: $partition)
    staleStatus(partition: $partition)
  }
}
"""


@pytest.fixture
def server(small_lab: Lab, dagster_home: Path, tmp_path: Path) -> Iterator[str]:
    """``dagster-webserver`` over the repository's workspace.yaml, serving the small lab."""
    env = stage_environment(small_lab, dagster_home)
    with webserver(REPO / "workspace.yaml", REPO, env, tmp_path / "webserver.log") as url:
        yield url


def test_webserver_shows_the_asset_graph_and_the_stage_materializations(
    small_lab: Lab, dagster_home: Path, server: str
) -> None:
    # As `dvc repro` runs the stages from a shell, with the UI already up.
    for arguments in (("source", "prose", SHARD), ("tag", "prose", SHARD)):
        done = run_stage(small_lab, dagster_home, *arguments)
        assert done.returncode == 0, done.stderr

    nodes = graphql(server, ASSET_GRAPH)["assetNodes"]
    graph = {
        "/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]}
        for n in nodes
    }
    assert graph == DEPS
    partitions = {"/".join(n["assetKey"]["path"]): n["partitionKeys"] for n in nodes}
    assert partitions["checkpoint"] == ["2", "4"]
    assert "4|winogrande" in partitions["downstream_eval"]
    # The shard the runs recorded is a partition of its source's assets.
    assert partitions["raw_source/prose"] == partitions["attributes/prose"] == [SHARD]

    keys = [{"path": ["raw_source", "prose"]}, {"path": ["attributes", "prose"]}]
    data = graphql(server, LATEST, {"keys": keys, "partition": SHARD})
    runs = {
        "/".join(i["assetKey"]["path"]): i["latestMaterialization"]["runId"]
        for i in data["assetsLatestInfo"]
    }
    assert all(runs.values()) and len(set(runs.values())) == 2  # a Dagster run each
    folders = {
        "raw_source/prose": small_lab.raw("prose", SHARD),
        "attributes/prose": small_lab.tagged("prose", SHARD),
    }
    for node in data["assetNodes"]:
        key = "/".join(node["assetKey"]["path"])
        (event,) = node["assetMaterializations"]
        tags = {t["key"]: t["value"] for t in event["tags"]}
        metadata = {m["label"]: m.get("text") for m in event["metadataEntries"]}
        assert node["dataVersion"] == tags["dagster/data_version"] == dvc_md5(folders[key])
        assert metadata["dvc_md5"] == node["dataVersion"]
        assert metadata["command"].startswith("python -m olmo_assets.defs.stage")
        # Dagster recorded the provenance its staleness reads: both are up to date.
        assert node["staleStatus"] == "FRESH"
