"""Continuous evaluation: checkpoints evaluated while the training run goes on.

The ``new_checkpoints`` sensor is evaluated against a real Dagster instance, and the runs it
asks for are executed as the daemon would launch them (each job in process, its stage command
through Pipes); the training run is the real trainer, stopped after its first checkpoint and
resumed later.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    RunRequest,
    SensorResult,
    build_sensor_context,
)

from olmo_assets.defs.checkpoints import CHECKPOINT_PARTITIONS
from olmo_assets.defs.location import build_definitions
from olmo_assets.lab.params import Lab
from olmo_assets.lab.steps.training import train_command


def _tick(defs: Any, instance: DagsterInstance, launched: dict[str, RunRequest]) -> list[str]:
    """One sensor evaluation; its new run requests executed in order. The jobs run."""
    sensor = defs.resolve_sensor_def("new_checkpoints")
    result = sensor(build_sensor_context(instance=instance, definitions=defs))
    if not isinstance(result, SensorResult):
        return []
    ran = []
    for request in result.run_requests or []:
        assert request.run_key is not None
        if request.run_key in launched:  # the daemon launches a run key once
            continue
        launched[request.run_key] = request
        job = defs.resolve_job_def(request.job_name)
        outcome = job.execute_in_process(instance=instance, partition_key=request.partition_key)
        assert outcome.success, request
        ran.append(f"{request.job_name} {request.partition_key or ''}".strip())
    return ran


def _until_idle(defs: Any, instance: DagsterInstance, launched: dict[str, RunRequest]) -> list[str]:
    ran: list[str] = []
    for _ in range(6):
        new = _tick(defs, instance, launched)
        if not new:
            return ran
        ran += new
    raise AssertionError(f"the sensor kept asking for runs: {ran}")


def test_each_kept_checkpoint_is_evaluated_while_training_goes_on(
    built_lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(built_lab.repo, repo, ignore=shutil.ignore_patterns(".locks"))
    for made in ("runs", "checkpoints", "eval", "reports"):
        shutil.rmtree(repo / "lab" / made, ignore_errors=True)
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    params["eval"]["continuous"] = True
    (repo / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("OLMO_LAB_REPO", str(repo))
    lab = Lab.load(repo)
    env = {**os.environ, "MLFLOW_TRACKING_URI": lab.mlflow_uri}
    lab.run_dir.mkdir(parents=True)

    # The run stops after its first checkpoint (step 2 of 4): training is not over.
    first = subprocess.run(
        [*train_command(lab), "--stop-at", "2"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr[-3000:]
    instance = DagsterInstance.get()
    defs = build_definitions(lab)
    launched: dict[str, RunRequest] = {}
    assert _until_idle(defs, instance, launched) == [
        "training_checkpoint 2",
        "evaluation_downstream 2|arc_easy",
        "evaluation_downstream 2|winogrande",
        "evaluation_perplexity 2",
        "evaluation",
    ]
    assert instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS) == ["2"]
    metrics = json.loads((lab.model_report / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["checkpoints"] == ["step000002"]
    assert metrics["train"]["steps"] == 2  # scored before training ended
    assert set(metrics["eval"]["step000002"]) == {"arc_easy", "winogrande", "mean"}

    # Training goes on to its end; only the new checkpoint is evaluated, then the report.
    rest = subprocess.run(train_command(lab), cwd=repo, env=env, capture_output=True, text=True)
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert _until_idle(defs, instance, launched) == [
        "training_checkpoint 4",
        "evaluation_downstream 4|arc_easy",
        "evaluation_downstream 4|winogrande",
        "evaluation_perplexity 4",
        "evaluation",
    ]
    assert instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS) == ["2", "4"]
    metrics = json.loads((lab.model_report / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["checkpoints"] == ["step000002", "step000004"]
    # The evaluations equal the session's (which evaluated eval.checkpoints after training).
    for step in (2, 4):
        for task in ("arc_easy", "winogrande"):
            ours = lab.downstream(step, task) / "results.json"
            assert (
                ours.read_bytes()
                == (built_lab.downstream(step, task) / "results.json").read_bytes()
            )
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("model_report")), limit=10
    ).records
    assert len(records) == 2
    check = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("downstream_eval")), limit=10
    ).records
    assert sorted(str(r.partition_key) for r in check) == [
        "2|arc_easy",
        "2|winogrande",
        "4|arc_easy",
        "4|winogrande",
    ]
