"""Training as a Slurm job through both entry points, on the real local cluster
(``tests/slurm_cluster.py``), with ``train.launcher: slurm``:

* a Dagster materialization (the stage command through Pipes) records the run with the
  step's metadata; its event log holds the training progress, and its captured stdout the
  job's own output;
* ``dvc repro`` runs the same stage, and DVC records it;
* a job that fails fails the materialization with an error naming its state and exit code;
* terminating the Dagster run (through the webserver, as the UI's *Terminate* does) cancels
  the job: nothing is left in ``squeue``.

Each lab here reuses the token shards of the session's small lab (``built_lab``): no
curation or tokenization runs again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    instance_for_test,
    materialize,
)

from olmo_assets.defs.record import RECORDED_BY_TAG
from olmo_assets.defs.server import FINISHED, DagsterServer
from olmo_assets.lab.params import Lab
from olmo_assets.lab.pipeline import StageRun, stage_named
from olmo_assets.lab.progress import PREFIX
from olmo_assets.lab.slurm import job_state
from olmo_nn.train.callbacks.metrics_file import METRICS_FILE
from tests.slurm_cluster import SlurmCluster, slurm_cluster, unavailable_reason  # noqa: F401

from .conftest import REPO, stage_environment
from .test_materialize import pipes_assets
from .test_two_entry_points import copy_repository
from .webserver import free_port, webserver

# Skip before the small lab is built where the cluster cannot start (slurm_cluster's rule).
NO_SLURM = None if os.environ.get("OLMO_REQUIRE_SLURM") else unavailable_reason()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(NO_SLURM is not None, reason=str(NO_SLURM)),
    # Dagster's own Pipes internals warn about its preview and deprecated APIs.
    pytest.mark.filterwarnings(
        "ignore:.*expected_writer_count:dagster.PreviewWarning",
        "ignore:AssetExecutionContext.run_id is deprecated:DeprecationWarning",
    ),
]

TRAINING_RUN = "training_run"
DAGSTER_YAML = """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
"""
_TERMINATE = """
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId) {
    __typename
    ... on TerminateRunFailure { message }
    ... on PythonError { message }
  }
}
"""


def slurm_lab(
    built: Lab,
    repo: Path,
    *,
    train: dict[str, Any] | None = None,
    checkpoints: list[int] | None = None,
    **slurm: Any,
) -> Lab:
    """The small lab at ``repo`` (its configs and token shards copied from ``built``),
    training as a one-node Slurm job; ``train``, ``checkpoints`` (``eval.checkpoints``) and
    ``slurm`` change its parameters."""
    shutil.copytree(built.repo / "configs", repo / "configs", dirs_exist_ok=True)
    shutil.copytree(built.shards, repo / "lab" / "shards")
    params = yaml.safe_load((built.repo / "params.yaml").read_text(encoding="utf-8"))
    params["train"] |= {
        "launcher": "slurm",
        "nproc": 1,
        "slurm": {"nodes": 1, "rdzv_port": free_port(), "time": "00:10:00", **slurm},
        **(train or {}),
    }
    if checkpoints is not None:
        params["eval"]["checkpoints"] = checkpoints
    (repo / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return Lab.load(repo)


@pytest.fixture
def on_cluster(
    slurm_cluster: SlurmCluster,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> dict[str, str]:
    """This process (and what it starts) reaches the local cluster; no Dagster or DVC
    variables leak into it. The cluster's environment."""
    for name in list(os.environ):
        if name.startswith(("DAGSTER_PIPES", "DVC_")) or name == "OLMO_LAB_REPO":
            monkeypatch.delenv(name)
    for name, value in slurm_cluster.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    # Runs launched through the webserver start at once, with no daemon to dequeue them.
    (tmp_path / "dagster_home" / "dagster.yaml").write_text(DAGSTER_YAML, encoding="utf-8")
    return dict(os.environ)


def queued(env: dict[str, str]) -> list[str]:
    """The ids of the jobs ``squeue`` lists."""
    listed = subprocess.run(
        ["squeue", "-h", "-o", "%A"], env=env, capture_output=True, text=True, check=True
    )
    return listed.stdout.split()


def wait_until_gone(job_id: str, env: dict[str, str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while job_id in queued(env):
        assert time.monotonic() < deadline, f"job {job_id} is still in squeue"
        time.sleep(0.5)


def job_outputs(lab: Lab) -> dict[str, str]:
    """Each job's id and its output file's text (``train.slurm.folder``)."""
    folder = lab.repo / lab.params.train.slurm.folder
    return {
        path.stem.removeprefix("train-"): path.read_text(encoding="utf-8")
        for path in sorted(folder.glob("train-*.out"))
    }


@contextmanager
def stdout_at_fd_1() -> Iterator[None]:
    """Dagster captures a step's output (its compute logs) by redirecting the file descriptor
    of ``sys.stdout``, which a stage process started through Pipes inherits as its fd 1. In a
    run worker that is fd 1; under pytest's capture ``sys.stdout`` is another file. Point it
    at fd 1 meanwhile, as in a run worker."""
    with open(1, "w", buffering=1, encoding="utf-8", closefd=False) as stdout:
        previous, sys.stdout = sys.stdout, stdout
        try:
            yield
        finally:
            sys.stdout = previous


def captured_stdout(instance: DagsterInstance, run_id: str) -> str:
    """What the run's steps (and the processes they started) wrote to stdout: Dagster's
    captured compute logs."""
    manager = instance.compute_log_manager
    text = []
    for record in instance.all_logs(run_id, of_type=DagsterEventType.LOGS_CAPTURED):
        assert record.dagster_event is not None
        file_key = record.dagster_event.logs_captured_data.file_key
        data = manager.get_log_data(manager.build_log_key_for_run(run_id, file_key))
        text.append((data.stdout or b"").decode("utf-8", errors="replace"))
    return "".join(text)


def test_dagster_materializes_the_training_run_as_a_slurm_job(
    built_lab: Lab,
    on_cluster: dict[str, str],
    tmp_path: Path,
) -> None:
    lab = slurm_lab(built_lab, tmp_path / "repo")
    assets, resources = pipes_assets(lab, TRAINING_RUN)
    with instance_for_test() as instance:
        with stdout_at_fd_1():
            result = materialize(assets, instance=instance, resources=resources)
        assert result.success
        events = {
            e.materialization.asset_key.to_user_string(): e.materialization
            for e in result.get_asset_materialization_events()
        }
        assert set(events) == {TRAINING_RUN, "data_order"}
        materialization = events[TRAINING_RUN]
        metadata = {key: entry.value for key, entry in materialization.metadata.items()}
        assert metadata["steps"] == 4
        assert metadata["checkpoints"] == "step000002-unsharded, step000004-unsharded"
        assert float(str(metadata["final_loss_smoothed"])) > 0
        assert metadata["command"] == "python -m olmo_assets.defs.stage train"
        checks = {(c.check_name, c.passed) for c in result.get_asset_check_evaluations()}
        assert checks == {("losses_finite", True)}

        # The training progress, from the job's metrics.jsonl, in the run's event log.
        messages = [str(r.user_message) for r in instance.all_logs(result.run_id)]
        progress = [m.removeprefix(PREFIX) for m in messages if m.startswith(PREFIX)]
        assert [line.split("  ")[0] for line in progress] == [
            "step 1/4 (25%)",
            "step 2/4 (50%)",
            "step 3/4 (75%)",
            "step 4/4 (100%)",
        ], messages
        # The job's own output, followed as it grew, in the run's captured stdout.
        ((job_id, output),) = job_outputs(lab).items()
        stdout = captured_stdout(instance, result.run_id)
    assert f"submitted Slurm job {job_id}" in stdout
    first = output.splitlines()[0]
    assert re.fullmatch(
        rf"job {job_id}: 1 node\(s\) \(n\d\), rendezvous at 127\.0\.0\.1:\d+", first
    )
    assert first in stdout
    state = job_state(job_id, on_cluster)
    assert state is None or state.state == "COMPLETED", state
    assert queued(on_cluster) == []


def test_dvc_repro_runs_the_training_as_a_slurm_job_and_records_it(
    built_lab: Lab,
    on_cluster: dict[str, str],
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    copy_repository(repo)
    lab = slurm_lab(built_lab, repo)
    env = {
        **on_cluster,
        "PATH": os.pathsep.join(
            [str(Path(sys.executable).parent), str(REPO / ".venv-dvc" / "bin"), on_cluster["PATH"]]
        ),
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_TRACKING_URI": lab.mlflow_uri,
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    if shutil.which("dvc", path=env["PATH"]) is None:
        pytest.fail("dvc is not installed: `make install` creates .venv-dvc with it")

    def shell(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=300,
        )  # fmt: skip

    # The small lab's shard plan, and a repository with no stage recorded yet.
    (repo / "dvc.lock").unlink(missing_ok=True)
    (repo / "sources" / "dvc.lock").unlink(missing_ok=True)
    for command in (
        (sys.executable, "-m", "olmo_nn.cli.main", "lab", "shards", "--repo", str(repo)),
        ("git", "init", "-q"),
        ("git", "add", "-A"),
        ("git", "commit", "-qm", "the small lab, training on Slurm"),
    ):
        done = shell(*command)
        assert done.returncode == 0, done.stdout

    # The training stage alone: its inputs (the token shards) are already there.
    repro = shell("dvc", "repro", "--single-item", "train")
    assert repro.returncode == 0, repro.stdout
    ((job_id, output),) = job_outputs(lab).items()
    assert f"submitted Slurm job {job_id}" in repro.stdout
    assert output.splitlines()[0] in repro.stdout  # the job's output, in dvc's terminal
    assert "step 4/4 (100%)" in repro.stdout
    status = shell("dvc", "status", "train", "--json")
    assert status.returncode == 0, status.stdout
    assert json.loads(status.stdout) == {}
    lock = yaml.safe_load((repo / "dvc.lock").read_text(encoding="utf-8"))
    assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["launcher"] == "slurm"
    # The stage command recorded the run in Dagster too, as one DVC ran.
    with DagsterInstance.get() as instance:
        (record,) = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(TRAINING_RUN)), limit=1
        ).records
        run = instance.get_run_by_id(record.run_id)
        assert run is not None and run.tags[RECORDED_BY_TAG] == "dvc"
    assert queued(on_cluster) == []


@pytest.mark.parametrize(
    ("change", "exit_code"),
    [
        ({"setup": ["exit 3"]}, "3:0"),
        # The trainer refuses, on its node, a micro-batch that does not divide the global
        # batch (4): torchrun, srun and the script exit 1.
        ({"train": {"micro_batch_size": 3}}, "1:0"),
    ],
    ids=["its-setup-exits-3", "the-trainer-fails"],
)
def test_a_failed_slurm_job_fails_the_materialization_naming_its_state(
    built_lab: Lab,
    on_cluster: dict[str, str],
    tmp_path: Path,
    change: dict[str, Any],
    exit_code: str,
) -> None:
    lab = slurm_lab(built_lab, tmp_path / "repo", **change)
    assets, resources = pipes_assets(lab, TRAINING_RUN)
    with instance_for_test() as instance:
        result = materialize(assets, instance=instance, resources=resources, raise_on_error=False)
        assert not result.success
        assert result.get_asset_materialization_events() == []
        records = instance.all_logs(result.run_id)
        logs = "\n".join(str(r.user_message) for r in records)
        (job_id,) = re.findall(r"Slurm job (\d+) ended", logs) or [logs]
        errors = [str(r.user_message) for r in records if r.level == logging.ERROR]
        failures = [
            event.step_failure_data.error
            for event in result.all_events
            if event.event_type is DagsterEventType.STEP_FAILURE
        ]
    output = lab.repo / "lab" / "slurm" / f"train-{job_id}.out"
    named = f"Slurm job {job_id} ended FAILED (exit code {exit_code}); its output: {output}"
    # The run's log says why at ERROR level, and so does the step's failure.
    assert f"python -m olmo_assets.defs.stage train failed: SlurmJobError: {named}" in errors
    assert len(failures) == 1 and failures[0] is not None
    assert (
        failures[0]
        .message.strip()
        .endswith(f"python -m olmo_assets.defs.stage train failed: SlurmJobError: {named}")
    ), failures[0].message
    assert queued(on_cluster) == []


def test_terminating_the_dagster_run_cancels_the_slurm_job(
    built_lab: Lab,
    on_cluster: dict[str, str],
    tmp_path: Path,
) -> None:
    """The UI's *Terminate*: the webserver asks the run launcher to stop the run, Dagster
    interrupts its step, the Pipes client interrupts the stage command, which scancels."""
    # Long enough that the job is still training when the run is terminated.
    lab = slurm_lab(
        built_lab,
        tmp_path / "repo",
        train={"max_steps": 10_000, "checkpoint_interval": 1000},
        checkpoints=[1000],
    )
    env = stage_environment(lab, Path(on_cluster["DAGSTER_HOME"])) | {
        "MLFLOW_TRACKING_URI": lab.mlflow_uri
    }
    metrics = lab.run_dir / METRICS_FILE
    with webserver(REPO / "workspace.yaml", REPO, env, tmp_path / "webserver.log") as url:
        server = DagsterServer(url.removesuffix("/graphql"))
        run_id = server.launch(StageRun(stage_named("train")))
        deadline = time.monotonic() + 90
        while not (metrics.is_file() and metrics.read_text(encoding="utf-8").strip()):
            status = server.status(run_id)
            assert status not in FINISHED, (status, server.messages(run_id, None)[0])
            assert time.monotonic() < deadline, (
                status,
                server.messages(run_id, None)[0],
                (tmp_path / "webserver.log").read_text()[-5000:],
            )
            time.sleep(1)
        (job_id,) = queued(on_cluster)

        answer = server.graphql(_TERMINATE, {"runId": run_id})["terminateRun"]
        assert answer["__typename"] == "TerminateRunSuccess", answer
        deadline = time.monotonic() + 120
        while (status := server.status(run_id)) not in FINISHED:
            assert time.monotonic() < deadline, status
            time.sleep(1)
        messages = server.messages(run_id, None)[0]
    assert status == "CANCELED", messages
    wait_until_gone(job_id, on_cluster, timeout=30)
    state = job_state(job_id, on_cluster)
    assert state is None or state.state == "CANCELLED", state
    # The stage command said so in the run's captured output.
    with DagsterInstance.get() as instance:
        stdout = captured_stdout(instance, run_id)
    assert f"submitted Slurm job {job_id}" in stdout
    assert f"cancelled Slurm job {job_id}" in stdout
