"""One small lab, built once per test session through every step up to the model report:
shared by the lab's tests and the platform's (fixtures are visible by folder)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from olmo_assets.lab.params import Lab
from olmo_assets.lab.pipeline import STAGES, stage_named, stage_runs
from olmo_assets.lab.steps.results import StepResult

REPO = Path(__file__).resolve().parents[2]
MAX_STEPS = 4
GLOBAL_BATCH_SIZE = 4
CHECKPOINTS = (2, 4)
TASKS = ("arc_easy", "winogrande")


def small_params() -> dict:
    """params.yaml shrunk to seconds: two sources, four steps, two checkpoints, two tasks."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["sources"] = {"code": {"kind": "code", "max_mb": 0.3}, "prose": {"kind": "prose"}}
    params["train"] |= {
        "max_steps": MAX_STEPS,
        "checkpoint_interval": 2,
        "global_batch_size": GLOBAL_BATCH_SIZE,
        "micro_batch_size": GLOBAL_BATCH_SIZE,
        # No in-loop downstream evaluation, one validation batch: the run takes seconds.
        "overrides": {
            "scheduler.warmup_steps": 1,
            "eval.downstream_tasks": "[]",
            "eval.max_batches": 1,
        },
    }
    params["eval"] |= {
        "checkpoints": list(CHECKPOINTS),
        "tasks": list(TASKS),
        "limit": 8,
        "perplexity_documents": 5,
    }
    return params


@pytest.fixture(scope="session")
def built_lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """A lab copy with every evaluation step run once, on the MLflow store in its repository."""
    root = tmp_path_factory.mktemp("lab") / "repo"
    root.mkdir()
    shutil.copytree(REPO / "configs", root / "configs")
    params = small_params()
    # One process per curation and tokenization step: a pool of spawned workers costs each
    # step seconds, and no artifact depends on it (LabParams.workers).
    params["workers"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        # As Dagster launches the steps: the embedded store's URI given explicitly.
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / '.mlflow' / 'mlflow.db'}")
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        lab = Lab.load(root)
        # Every stage in the declaration's order, but the reports (the model report is a
        # fixture of its own).
        skipped = {"corpus_report", "model_report"}
        for stage in STAGES:
            if stage.name not in skipped:
                for run in stage_runs(lab, stage):
                    run.stage.run(lab, *run.typed_arguments)
    return lab


@pytest.fixture(scope="session")
def model_report(built_lab: Lab) -> StepResult:
    """The model_report step, run once on the built lab."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        return stage_named("model_report").run(built_lab)
