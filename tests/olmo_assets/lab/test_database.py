"""Shared state: Dagster's instance and MLflow's store on SQLite, or on a real PostgreSQL.

The load test launches 20 evaluation materializations at once from two processes against
one Dagster instance and one MLflow store, once per backend: every materialization and
every MLflow run must be recorded, and no process may meet a locked database.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from olmo_assets.lab import database, tracking
from olmo_assets.lab.database import DATABASE_URL_ENV, dagster_home, mlflow_tracking_uri
from olmo_assets.lab.params import Lab
from tests.olmo_assets.lab.conftest import CHECKPOINTS, TASKS
from tests.postgres_server import PostgresServer, postgres_server  # noqa: F401

WORKER = Path(__file__).with_name("evaluations_at_once.py")
REPO = Path(__file__).resolve().parents[3]
URL = "postgresql://lab:secret@db.internal:5432/olmo"


def test_sqlite_is_the_default_and_each_tool_s_own_setting_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv(database.DAGSTER_URL_ENV, "")  # dagster_home sets it: restored after
    assert mlflow_tracking_uri(tmp_path) == f"sqlite:///{tmp_path / '.mlflow' / 'mlflow.db'}"
    assert dagster_home(tmp_path) == tmp_path / ".dagster"

    monkeypatch.setenv(DATABASE_URL_ENV, URL)
    assert mlflow_tracking_uri(tmp_path) == f"{URL}?options=-csearch_path%3Dmlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert mlflow_tracking_uri(tmp_path) == "http://mlflow.internal:5000"

    # A dagster.yaml with storage of its own is used as it is.
    home = tmp_path / "own"
    home.mkdir()
    (home / "dagster.yaml").write_text("storage:\n  sqlite:\n    base_dir: /x\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert dagster_home(tmp_path) == home


def test_the_lab_s_instance_gets_postgres_storage_with_its_other_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv(database.DAGSTER_URL_ENV, "")  # dagster_home sets it: restored after
    shutil.copy(REPO / ".dagster" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv(DATABASE_URL_ENV, URL)
    derived = dagster_home(tmp_path)
    assert derived == home / database.POSTGRES_INSTANCE
    config = yaml.safe_load((derived / "dagster.yaml").read_text())
    original = yaml.safe_load((home / "dagster.yaml").read_text())
    assert config == original | {
        "storage": {"postgres": {"postgres_url": {"env": database.DAGSTER_URL_ENV}}}
    }
    # dagster-postgres needs psycopg2 (SQLAlchemy 2.1 picks psycopg 3 for postgresql://).
    assert os.environ[database.DAGSTER_URL_ENV] == URL.replace(
        "postgresql:", "postgresql+psycopg2:"
    )
    assert "secret" not in (derived / "dagster.yaml").read_text()
    # Asked again from the derived folder (a process it started), it stays.
    monkeypatch.setenv("DAGSTER_HOME", str(derived))
    assert dagster_home(tmp_path) == derived


def test_a_url_that_is_not_postgres_is_refused_without_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV, "mysql://lab:secret@db.internal/olmo")
    with pytest.raises(ValueError, match="OLMO_LAB_DATABASE_URL=mysql://lab:\\*\\*\\*@") as error:
        mlflow_tracking_uri(tmp_path)
    assert "secret" not in str(error.value)
    monkeypatch.setenv(DATABASE_URL_ENV, "postgresql://mlflow:secret@db.internal/olmo")
    with pytest.raises(ValueError, match="a user named 'mlflow'"):
        mlflow_tracking_uri(tmp_path)
    assert database.redacted(URL) == "postgresql://lab:***@db.internal:5432/olmo"
    assert (
        database.redacted("postgresql://db.internal/olmo?user=lab&password=secret")
        == "postgresql://db.internal/olmo?user=lab&password=***"
    )


def _lab_copy(built_lab: Lab, root: Path) -> Lab:
    """The built lab, its files hard-linked (every step replaces files, never edits them),
    without its MLflow store."""
    repo = root / "repo"
    shutil.copytree(
        built_lab.repo, repo, copy_function=os.link, ignore=shutil.ignore_patterns(".mlflow")
    )
    return Lab.load(repo)


def _specs() -> list[list[str]]:
    """Ten materializations per process: every downstream partition twice, every
    perplexity partition once (20 in all; a partition's runs take turns)."""
    downstream = [f"downstream:{step}|{task}" for step in CHECKPOINTS for task in TASKS]
    perplexity = [f"perplexity:{step}" for step in CHECKPOINTS]
    return [downstream * 2 + perplexity] * 2


def _load_test(lab: Lab, tmp_path: Path, env: dict[str, str]) -> list[dict]:
    """Both worker processes, started together; every materialization they report."""
    # A training run in this store for the evaluations to nest under (the file is a link).
    from mlflow.tracking import MlflowClient

    experiment = tracking.experiment_id(lab)
    run = MlflowClient(lab.mlflow_uri).create_run(experiment, run_name="training")
    (lab.run_dir / "mlflow_run_id").unlink()
    (lab.run_dir / "mlflow_run_id").write_text(run.info.run_id)

    go = tmp_path / "go"
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    results = [tmp_path / f"worker{i}.jsonl" for i in range(2)]
    processes = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(go), str(result), *specs],
            cwd=REPO,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        for specs, log, result in zip(_specs(), logs, results, strict=True)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("go.ready.*"))) < 2:
        assert all(p.poll() is None for p in processes), [log.read_text() for log in logs]
        assert time.monotonic() < deadline, "the workers did not load in 120 s"
        time.sleep(0.1)
    go.touch()
    outcomes = []
    for process, log, result in zip(processes, logs, results, strict=True):
        process.wait(timeout=600)
        output = log.read_text()
        assert process.returncode == 0, output
        assert "database is locked" not in output
        assert "deadlock" not in output.lower()
        outcomes += [json.loads(line) for line in result.read_text().splitlines()]
    return outcomes


def _assert_all_recorded(lab: Lab, outcomes: list[dict]) -> None:
    from dagster import AssetKey, DagsterInstance, DagsterRunStatus
    from mlflow.tracking import MlflowClient

    assert len(outcomes) == 20 and all(o["success"] for o in outcomes), outcomes
    instance = DagsterInstance.get()
    assert {o["run_id"] for o in outcomes} == {r.run_id for r in instance.get_runs()}
    for outcome in outcomes:
        assert instance.get_run_by_id(outcome["run_id"]).status == DagsterRunStatus.SUCCESS
    for asset, count in (("downstream_eval", 16), ("perplexity_eval", 4)):
        records = instance.fetch_materializations(AssetKey(asset), limit=100).records
        assert len(records) == count, asset

    client = MlflowClient(tracking_uri=lab.mlflow_uri)
    experiment = tracking.experiment_id(lab, client)
    evaluations = client.search_runs(
        [experiment], filter_string=f"tags.`{tracking.KIND_TAG}` != 'training'"
    )
    # One run per partition (a rerun with the same result reuses it), each finished.
    assert len(evaluations) == 6
    assert {r.info.status for r in evaluations} == {"FINISHED"}
    ids = {r.info.run_id for r in evaluations}
    assert {i for o in outcomes for i in o["mlflow_run_ids"]} == ids
    # The training run holds each headline number once per checkpoint.
    training = tracking.training_run_id(lab)
    assert training is not None
    for task in TASKS:
        history = client.get_metric_history(training, f"downstream/{task}/acc")
        assert sorted(p.step for p in history) == list(CHECKPOINTS)


def _environment(lab: Lab, home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", DATABASE_URL_ENV, database.DAGSTER_URL_ENV)
        and not k.startswith("DAGSTER_")
    }
    return env | {"OLMO_LAB_REPO": str(lab.repo), "DAGSTER_HOME": str(home)} | extra


def _instance_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


@pytest.mark.slow
def test_twenty_evaluations_at_once_on_sqlite(
    built_lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = _lab_copy(built_lab, tmp_path)
    home = _instance_home(tmp_path)
    env = _environment(lab, home)
    for key in list(os.environ):
        if key not in env:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    outcomes = _load_test(lab, tmp_path, env)
    _assert_all_recorded(lab, outcomes)
    assert (lab.repo / ".mlflow" / "mlflow.db").is_file()


@pytest.mark.slow
def test_twenty_evaluations_at_once_on_postgres(
    built_lab: Lab,
    postgres_server: PostgresServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psycopg

    url = postgres_server.database("load_test")
    lab = _lab_copy(built_lab, tmp_path)
    home = _instance_home(tmp_path)
    env = _environment(lab, home, **{DATABASE_URL_ENV: url})
    for key in list(os.environ):
        if key not in env:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert lab.mlflow_uri.startswith(url)
    outcomes = _load_test(lab, tmp_path, env)
    monkeypatch.setenv(database.DAGSTER_URL_ENV, "")  # dagster_home sets it: restored after
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(lab.repo)))
    _assert_all_recorded(lab, outcomes)

    # Nothing went to SQLite; Dagster's tables are in `public`, MLflow's in `mlflow`.
    assert not (lab.repo / ".mlflow" / "mlflow.db").exists()
    assert not (home / "postgres" / "history").exists()
    with psycopg.connect(url) as connection:
        tables = connection.execute(
            "SELECT table_schema, count(*) FROM information_schema.tables "
            "WHERE table_name IN ('runs', 'alembic_version') GROUP BY table_schema"
        ).fetchall()
        assert dict(tables) == {"public": 2, "mlflow": 2}
        events = connection.execute("SELECT count(*) FROM public.event_logs").fetchone()
        assert events is not None and events[0] > 0
