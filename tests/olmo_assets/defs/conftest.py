"""A small lab copy for the platform tests, and a Dagster instance folder per test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from olmo_assets.lab.params import Lab

REPO = Path(__file__).resolve().parents[3]
SOURCES = ("code", "prose")
CHECKPOINTS = (2, 4)
TASKS = ("arc_easy", "winogrande")


def write_small_lab(root: Path) -> Path:
    """params.yaml (two sources, four training steps, two checkpoints, two tasks) and configs/."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["sources"] = {"code": {"kind": "code", "max_mb": 0.3}, "prose": {"kind": "prose"}}
    params["train"] |= {
        "max_steps": 4,
        "checkpoint_interval": 2,
        "overrides": {"scheduler.warmup_steps": 1},
    }
    params["eval"] |= {
        "checkpoints": list(CHECKPOINTS),
        "tasks": list(TASKS),
        "limit": 8,
        "perplexity_documents": 5,
    }
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "configs", root / "configs")
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return root


@pytest.fixture
def small_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lab:
    """A fresh small lab; ``OLMO_LAB_REPO`` points at it (as the stage command reads it)."""
    root = write_small_lab(tmp_path / "repo")
    monkeypatch.setenv("OLMO_LAB_REPO", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / '.mlflow' / 'mlflow.db'}")
    return Lab.load(root)


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty persistent Dagster instance (SQLite, no telemetry) at ``$DAGSTER_HOME``."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def stage_environment(lab: Lab, home: Path) -> dict[str, str]:
    """The environment of a stage run from a shell: no Pipes or DVC variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DAGSTER_PIPES") and k not in ("DVC_STAGE", "DVC_ROOT")
    }
    return env | {"OLMO_LAB_REPO": str(lab.repo), "DAGSTER_HOME": str(home)}


def run_stage(
    lab: Lab, home: Path, *arguments: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The stage command as a shell runs it (``env`` adds variables, e.g. DVC's)."""
    return subprocess.run(
        [sys.executable, "-m", "olmo_assets.defs.stage", *arguments],
        cwd=lab.repo,
        env=stage_environment(lab, home) | (env or {}),
        capture_output=True,
        text=True,
        timeout=120,
    )
