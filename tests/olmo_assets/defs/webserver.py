"""The real ``dagster-webserver`` for tests: started on a free loopback port over a lab's
``workspace.yaml``, asked through GraphQL what the UI shows (assets, staleness), reloaded
after its parameters change."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from olmo_assets.defs.server import DagsterServer, free_port

ASSET_GRAPH = "{ assetNodes { assetKey { path } dependencyKeys { path } partitionKeys } }"
STALENESS = "{ assetNodes { assetKey { path } partitionKeys staleStatus } }"
BY_PARTITION = """
query Partitioned($keys: [AssetKeyInput!]!) {
  assetNodes(assetKeys: $keys) { assetKey { path } partitionKeys staleStatusByPartition }
}
"""
RELOAD = """
mutation Reload($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry {
      locationOrLoadError { __typename ... on PythonError { message } }
    }
  }
}
"""


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ask the webserver at ``url`` (its ``/graphql`` address)."""
    return DagsterServer(url.removesuffix("/graphql")).graphql(query, variables)


@contextmanager
def serving(
    command: list[str], ready: Callable[[], bool], env: dict[str, str], log: Path, cwd: Path
) -> Iterator[None]:
    """Run a server until the block ends, once ``ready()`` says it answers (its output in
    ``log``); then stop its whole process group."""
    with log.open("w") as output:
        server = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while True:
                assert server.poll() is None, log.read_text()
                try:
                    if ready():
                        break
                except (OSError, AssertionError, ValueError, RuntimeError):
                    pass
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
            yield
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


@contextmanager
def webserver(
    workspace: Path, cwd: Path, env: dict[str, str], log: Path, port: int | None = None
) -> Iterator[str]:
    """``dagster-webserver -w workspace`` until the block ends; yields its GraphQL URL."""
    port = port or free_port()
    command = [
        str(Path(sys.executable).parent / "dagster-webserver"),
        *("-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)),
    ]
    url = f"http://127.0.0.1:{port}/graphql"
    with serving(command, lambda: bool(graphql(url, ASSET_GRAPH)["assetNodes"]), env, log, cwd):
        yield url


def reload(url: str, location: str = "olmo_lab") -> None:
    """Reload the code location (what the UI's *Reload* does after params.yaml changes)."""
    entry = graphql(url, RELOAD, {"name": location})["reloadRepositoryLocation"]
    assert entry["__typename"] == "WorkspaceLocationEntry", entry
    loaded = entry["locationOrLoadError"]
    assert loaded["__typename"] == "RepositoryLocation", loaded


def stale(url: str) -> dict[tuple[str, str | None], str]:
    """Every asset (and partition) the UI shows as not fresh, with its status (STALE or
    MISSING)."""
    found: dict[tuple[str, str | None], str] = {}
    partitioned = []
    for node in graphql(url, STALENESS)["assetNodes"]:
        key = "/".join(node["assetKey"]["path"])
        if node["partitionKeys"]:
            partitioned.append({"path": node["assetKey"]["path"]})
        elif node["staleStatus"] != "FRESH":
            found[key, None] = node["staleStatus"]
    for node in graphql(url, BY_PARTITION, {"keys": partitioned})["assetNodes"]:
        key = "/".join(node["assetKey"]["path"])
        for partition, status in zip(
            node["partitionKeys"], node["staleStatusByPartition"], strict=True
        ):
            if status != "FRESH":
                found[key, partition] = status
    return found
