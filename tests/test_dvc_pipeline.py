"""The DVC pipeline end to end, on a copy of the repository with tiny parameters.

One scenario runs once (a module fixture) and the tests read its record: ``dvc repro``
builds every stage; a second ``dvc repro`` runs none; Dagster's instance holds a
materialization per artifact whose data version is the hash in ``dvc.lock``; the default
remote takes a ``dvc push`` that a fresh clone can ``dvc pull``; a parameter change reruns
only the stages that read it, and ``dvc exp run -S`` does the same; ``dvc metrics show`` lists
the evaluation results and ``dvc plots show`` renders the loss curve.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from olmo_assets.lab.hashing import dvc_md5

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

# The whole pipeline in about a minute: two sources, two training steps, one checkpoint,
# one task on a few examples.
TINY_PARAMS = {
    "sources": {"code": {"kind": "code", "max_mb": 0.3}, "prose": {"kind": "prose"}},
    "train": {
        "max_steps": 2,
        "checkpoint_interval": 2,
        "overrides": {"scheduler.warmup_steps": 1},
    },
    "eval": {"checkpoints": [2], "tasks": ["arc_easy"], "limit": 4, "perplexity_documents": 2},
}
RUNNING = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)


def dvc_executable() -> str:
    """``dvc`` on PATH (the Makefile puts .venv-dvc/bin there), else the repository's."""
    found = shutil.which("dvc") or REPO / ".venv-dvc" / "bin" / "dvc"
    if not Path(found).is_file():
        pytest.fail("dvc is not installed: `make install` creates .venv-dvc with it")
    return str(found)


def copy_repository(target: Path) -> None:
    """The working tree's files that git tracks or would track (no venvs, no lab/)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def merge(base: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key != "sources":
            merge(base[key], value)
        else:
            base[key] = value
    return base


@dataclass
class Scenario:
    repo: Path
    stages: list[str]
    """Every stage of dvc.yaml at the tiny parameters."""
    outputs: dict[str, str] = field(default_factory=dict)
    """What each command printed, by step name."""
    ran: dict[str, set[str]] = field(default_factory=dict)
    """The stages each command ran, by step name."""
    lock: dict = field(default_factory=dict)
    pulled: dict[str, str] = field(default_factory=dict)
    """Hashes of the model report: as dvc.lock committed it, and as a clone pulled it."""
    status_after_source_change: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    def lock_outs(self) -> dict[str, str]:
        return {
            out["path"]: out["md5"]
            for stage in self.lock["stages"].values()
            for out in stage.get("outs", [])
        }


class Shell:
    def __init__(self, repo: Path, env: dict[str, str], dvc: str) -> None:
        self.repo, self.env, self.dvc = repo, env, dvc

    def __call__(self, *command: str, cwd: Path | None = None) -> str:
        program = self.dvc if command[0] == "dvc" else command[0]
        done = subprocess.run(
            [program, *command[1:]],
            cwd=cwd or self.repo,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if done.returncode != 0:
            pytest.fail(f"`{' '.join(command)}` exited with {done.returncode}:\n{done.stdout}")
        return done.stdout


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    root = tmp_path_factory.mktemp("dvc")
    repo = root / "repo"
    copy_repository(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(merge(params, TINY_PARAMS), sort_keys=False))
    # The committed dvc.lock records the default parameters' pipeline; this one starts afresh.
    (repo / "dvc.lock").unlink(missing_ok=True)

    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")}
    env.pop("OLMO_LAB_REPO", None)
    # Stage commands write __pycache__ into the code they depend on: .dvcignore must hide it.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    dvc = dvc_executable()
    env |= {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "DAGSTER_HOME": str(repo / ".dagster"),
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    shell = Shell(repo, env, dvc)
    shell("git", "init", "-q")
    shell("git", "add", "-A")
    shell("git", "commit", "-qm", "a copy of the repository, tiny parameters")

    stages = shell("dvc", "stage", "list", "--name-only").split()
    result = Scenario(repo, stages)

    def step(name: str, *command: str, cwd: Path | None = None) -> str:
        output = shell(*command, cwd=cwd)
        result.outputs[name] = output
        result.ran[name] = set(RUNNING.findall(output))
        return output

    step("repro", "dvc", "repro")
    step("repro_again", "dvc", "repro")
    result.lock = yaml.safe_load((repo / "dvc.lock").read_text())
    shell("git", "commit", "-qm", "dvc.lock")  # core.autostage staged it

    # The default remote (beside the repository) takes a push; a fresh clone pulls.
    step("push", "dvc", "push", "model_report")
    shell("git", "clone", "-q", str(repo), str(root / "clone"), cwd=root)
    step("pull", "dvc", "pull", "model_report", cwd=root / "clone")
    report = "lab/reports/model"
    result.pulled = {
        "committed": result.lock_outs()[report],
        "pulled": dvc_md5(root / "clone" / report),
    }

    # A source's parameter invalidates that source alone (status compares, runs nothing).
    changed = yaml.safe_load((repo / "params.yaml").read_text())
    changed["sources"]["code"]["max_mb"] = 0.2
    (repo / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    result.status_after_source_change = json.loads(shell("dvc", "status", "--json"))
    shell("git", "checkout", "-q", "params.yaml")

    changed["sources"]["code"]["max_mb"] = 0.3
    changed["eval"]["limit"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    step("limit_changed", "dvc", "repro")
    step("exp_run", "dvc", "exp", "run", "-S", "eval.perplexity_documents=1")
    step("plots", "dvc", "plots", "show", "-o", str(root / "plots"))
    result.metrics = json.loads(shell("dvc", "metrics", "show", "--json"))
    result.lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return result


def test_repro_runs_every_stage(scenario: Scenario) -> None:
    assert scenario.ran["repro"] == set(scenario.stages)
    assert len(scenario.stages) == 15
    for path in scenario.lock_outs():
        assert (scenario.repo / path).exists(), path


def test_second_repro_runs_nothing(scenario: Scenario) -> None:
    assert scenario.ran["repro_again"] == set()
    assert "Data and pipelines are up to date" in scenario.outputs["repro_again"]


def test_dagster_shows_dvc_hashes_as_data_versions(scenario: Scenario) -> None:
    """Each DVC output's latest materialization in the Dagster instance carries the hash
    dvc.lock holds for it, and its metadata."""
    from dagster import AssetKey, AssetRecordsFilter, DagsterInstance
    from olmo_assets.defs.catalog import ARTIFACTS, partition_key

    from olmo_assets.lab.params import Lab
    from olmo_assets.lab.steps import STEPS

    lab = Lab.load(scenario.repo)
    values = {
        "source": list(lab.params.sources),
        "step": [str(s) for s in lab.params.eval.checkpoints],
        "task": lab.params.eval.tasks,
    }
    outs = scenario.lock_outs()
    checked = set()
    with DagsterInstance.from_config(str(scenario.repo / ".dagster")) as instance:
        for artifact in ARTIFACTS:
            kinds = STEPS[artifact.step].arguments
            for arguments in itertools.product(*(values[k] for k in kinds)):
                folder = artifact.folder(lab, *arguments).relative_to(lab.repo).as_posix()
                if folder not in outs:
                    continue
                partition = partition_key(artifact, arguments)
                records = instance.fetch_materializations(
                    AssetRecordsFilter(
                        asset_key=AssetKey(artifact.key),
                        asset_partitions=None if partition is None else [partition],
                    ),
                    limit=1,
                ).records
                assert records, f"no materialization of {artifact.key} [{partition}]"
                materialization = records[0].asset_materialization
                assert materialization is not None
                tags = materialization.tags or {}
                assert tags.get("dagster/data_version") == outs[folder], folder
                assert materialization.metadata, folder
                checked.add(folder)
    assert checked == set(outs)


def test_outputs_hash_as_dvc_lock_says(scenario: Scenario) -> None:
    for path, md5 in scenario.lock_outs().items():
        assert dvc_md5(scenario.repo / path) == md5, path


def test_default_remote_pushes_and_a_clone_pulls(scenario: Scenario) -> None:
    assert "pushed" in scenario.outputs["push"]
    assert scenario.pulled["pulled"] == scenario.pulled["committed"]


def test_a_source_parameter_invalidates_that_source_only(scenario: Scenario) -> None:
    status = scenario.status_after_source_change
    assert set(status) == {"source@code", "tag@code", "dedup", "mix"}, status
    assert "sources.code" in json.dumps(status)


def test_a_parameter_change_reruns_only_its_dependents(scenario: Scenario) -> None:
    assert scenario.ran["limit_changed"] == {"downstream@2-arc_easy", "model_report"}


def test_exp_run_sets_a_parameter_and_reruns_its_dependents(scenario: Scenario) -> None:
    assert scenario.ran["exp_run"] == {"perplexity@2", "model_report"}
    assert "Ran experiment" in scenario.outputs["exp_run"]
    assert yaml.safe_load((scenario.repo / "params.yaml").read_text())["eval"] == {
        **TINY_PARAMS["eval"],
        "limit": 3,
        "perplexity_documents": 1,
    }


def test_metrics_show_lists_the_evaluation_results(scenario: Scenario) -> None:
    metrics = scenario.metrics[""]["data"]["lab/reports/model/metrics.json"]["data"]
    assert set(metrics["eval"]["step000002"]) == {"arc_easy", "mean"}
    assert metrics["train"]["steps"] == 2
    assert metrics["perplexity"]["step000002"]


def test_plots_show_renders_the_loss_curve(scenario: Scenario) -> None:
    page = (scenario.repo.parent / "plots" / "index.html").read_text()
    assert "Training loss" in page
    assert "Accuracy by checkpoint" in page
