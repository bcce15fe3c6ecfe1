"""Dagster as its users run it: ``dagster dev`` (webserver, daemon, code server) on the lab's
instance, and runs of the lab's named jobs launched through its GraphQL API.

``make demo`` launches every stage run this way, so the UI's *Runs*, *Jobs* and the
overview's timeline show each run with its job, target and partition, exactly as if it had
been launched from the UI (the run queue, its limits and the daemon included).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from olmo_assets.defs.location import job_name
from olmo_assets.lab.pipeline import StageRun

__all__ = ["DagsterServer", "dagster_dev", "free_port"]

LOCATION = "olmo_lab"
"""The code location's name in ``workspace.yaml``."""
REPOSITORY = "__repository__"
"""The repository name Dagster gives a module's ``Definitions``."""

_LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PipelineNotFoundError { message }
  }
}
"""
_STATUS = """
query Status($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status } ... on PythonError { message } }
}
"""
_LOGS = """
query Logs($runId: ID!, $cursor: String) {
  logsForRun(runId: $runId, afterCursor: $cursor) {
    __typename
    ... on EventConnection {
      cursor
      events {
        __typename
        ... on MessageEvent { message level }
        ... on ExecutionStepFailureEvent { error { message } }
      }
    }
  }
}
"""
_READY = "{ repositoriesOrError { __typename ... on RepositoryConnection { nodes { name } } } }"
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class DagsterServer:
    """A running Dagster webserver, spoken to through GraphQL."""

    url: str
    """The UI's address (``http://127.0.0.1:3000``)."""

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", body, {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as error:  # GraphQL answers a bad query with 400
            answer = json.load(error)
        if answer.get("errors"):
            raise RuntimeError(f"Dagster's GraphQL API refused a request: {answer['errors']}")
        data: dict[str, Any] = answer["data"]
        return data

    def launch(self, run: StageRun, tags: Mapping[str, str] | None = None) -> str:
        """Launch ``run``'s assets in the stage's named job (for its partition); the run id."""
        all_tags = dict(tags or {})
        if run.partition is not None:
            all_tags["dagster/partition"] = run.partition
        params = {
            "selector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": REPOSITORY,
                "jobName": job_name(run.stage, run.keys.get("source")),
                "assetSelection": [{"path": list(run.asset_path(a))} for a in run.stage.writes],
            },
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in all_tags.items()]},
            "runConfigData": {},
        }
        answer = self.graphql(_LAUNCH, {"params": params})["launchRun"]
        if answer["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"launching {run.dvc_name} failed: {answer}")
        return str(answer["run"]["runId"])

    def status(self, run_id: str) -> str:
        """``QUEUED``, ``STARTED``, ``SUCCESS``, ``FAILURE``, ``CANCELED``, ..."""
        answer = self.graphql(_STATUS, {"runId": run_id})["runOrError"]
        if answer["__typename"] != "Run":
            raise RuntimeError(f"run {run_id}: {answer}")
        return str(answer["status"])

    def messages(self, run_id: str, cursor: str | None) -> tuple[list[str], str | None]:
        """The run's log messages after ``cursor`` (and the new cursor): step failures'
        errors and the messages of its events."""
        answer = self.graphql(_LOGS, {"runId": run_id, "cursor": cursor})["logsForRun"]
        if answer["__typename"] != "EventConnection":
            return [], cursor
        lines = []
        for event in answer["events"]:
            if event["__typename"] == "ExecutionStepFailureEvent" and event.get("error"):
                lines.append(f"step failed: {event['error']['message']}")
            elif event.get("message"):
                lines.append(event["message"])
        return lines, answer["cursor"]


@contextmanager
def dagster_dev(
    repo: Path,
    log: Path,
    *,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 180.0,
) -> Iterator[DagsterServer]:
    """``dagster dev -w workspace.yaml`` in ``repo`` on a loopback port until the block ends
    (its output goes to ``log``); yields the server once its code location has loaded."""
    port = port or free_port()
    command = [
        str(Path(sys.executable).parent / "dagster"),
        "dev",
        *("-w", str(repo / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)),
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    server = DagsterServer(f"http://127.0.0.1:{port}")
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            cwd=repo,
            env=dict(env if env is not None else os.environ),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"`dagster dev` exited ({process.returncode}); see {log}")
                try:
                    found = server.graphql(_READY)["repositoriesOrError"]
                    if found.get("nodes"):
                        break
                except (urllib.error.URLError, ConnectionError, RuntimeError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"`dagster dev` did not answer in {timeout:.0f}s; see {log}")
                time.sleep(0.5)
            yield server
        finally:
            # dagster dev stops its webserver, daemon and code server on SIGINT.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
