"""The real Dagster webserver serves the workspace: asset graph and latest materializations
(recorded by the stage command from a shell, as after ``dvc repro``) through GraphQL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from olmo_assets.lab.hashing import dvc_md5
from olmo_assets.lab.params import Lab

from .conftest import REPO, run_stage, stage_environment
from .test_definitions import DEPS

ASSET_GRAPH = "{ assetNodes { assetKey { path } dependencyKeys { path } partitionKeys } }"
LATEST = """
query Latest($keys: [AssetKeyInput!]!) {
  assetsLatestInfo(assetKeys: $keys) { assetKey { path } latestMaterialization { runId } }
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    assetMaterializations(limit: 1) {
      tags { key value }
      metadataEntries { label ... on TextMetadataEntry { text } }
    }
    dataVersion
    staleStatus
  }
}
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode("utf-8")
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as error:  # GraphQL answers a malformed query with 400
        answer = json.load(error)
    assert not answer.get("errors"), answer["errors"]
    return answer["data"]


@pytest.fixture
def webserver(small_lab: Lab, dagster_home: Path, tmp_path: Path) -> Iterator[str]:
    """``dagster-webserver`` on a free loopback port over the repository's workspace.yaml."""
    port = _free_port()
    log = (tmp_path / "webserver.log").open("w")
    command = [
        str(Path(sys.executable).parent / "dagster-webserver"),
        *("-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)),
    ]
    server = subprocess.Popen(
        command,
        cwd=REPO,
        env=stage_environment(small_lab, dagster_home),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/graphql"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "webserver.log").read_text()
            try:
                if _graphql(url, ASSET_GRAPH)["assetNodes"]:
                    break
            except (urllib.error.URLError, ConnectionError, AssertionError, ValueError):
                pass
            assert time.monotonic() < deadline, (tmp_path / "webserver.log").read_text()
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def test_webserver_shows_the_asset_graph_and_the_stage_materializations(
    small_lab: Lab, dagster_home: Path, webserver: str
) -> None:
    # As `dvc repro` runs the stages from a shell, with the UI already up.
    for arguments in (("source", "prose"), ("tag", "prose")):
        done = run_stage(small_lab, dagster_home, *arguments)
        assert done.returncode == 0, done.stderr

    nodes = _graphql(webserver, ASSET_GRAPH)["assetNodes"]
    graph = {
        "/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]}
        for n in nodes
    }
    assert graph == DEPS
    partitions = {"/".join(n["assetKey"]["path"]): n["partitionKeys"] for n in nodes}
    assert partitions["checkpoint"] == ["2", "4"]
    assert "4|winogrande" in partitions["downstream_eval"]

    keys = [{"path": ["raw_source", "prose"]}, {"path": ["attributes", "prose"]}]
    data = _graphql(webserver, LATEST, {"keys": keys})
    runs = {
        "/".join(i["assetKey"]["path"]): i["latestMaterialization"]["runId"]
        for i in data["assetsLatestInfo"]
    }
    assert all(runs.values()) and len(set(runs.values())) == 2  # a Dagster run each
    folders = {
        "raw_source/prose": small_lab.raw("prose"),
        "attributes/prose": small_lab.tagged("prose"),
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
