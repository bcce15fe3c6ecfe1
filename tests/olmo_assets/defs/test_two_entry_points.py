"""Dagster and DVC, end to end, on a copy of the repository with tiny parameters.

One scenario runs once (a module fixture) and the tests read its record:

* ``make demo``'s script materializes everything through Dagster; each stage commits itself
  to DVC, so ``dvc status`` is clean and ``dvc repro`` runs nothing;
* for each of several edits (parameters, config files, code), the assets and partitions the
  real webserver shows stale (or missing) are exactly the stages ``dvc status`` lists;
* a ``dvc repro`` after a parameter change reruns only its dependents and Dagster then
  shows everything fresh, with ``dvc.lock``'s hashes as data versions;
* the default remote takes a push that a fresh clone pulls; ``dvc exp run -S``,
  ``dvc metrics show`` and ``dvc plots show`` work.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import pytest
import yaml

from olmo_assets.defs.assets import stage_run
from olmo_assets.defs.location import job_name
from olmo_assets.lab.hashing import dvc_md5
from olmo_assets.lab.pipeline import STAGES, Fanout, artifact_named

from .browser import Page, chromium, mlflow_ui, walk_lineage
from .conftest import REPO
from .lineage_checks import provenance_mismatches, unresolved_links
from .webserver import free_port, reload, stale, webserver

pytestmark = pytest.mark.slow

# The whole pipeline in a few minutes: two sources, two training steps, one checkpoint,
# one task on a few examples (and no in-loop downstream evaluation, one validation batch:
# the evaluation stages score the checkpoint).
TINY_PARAMS = {
    "sources": {"code": {"kind": "code", "max_mb": 0.3}, "prose": {"kind": "prose"}},
    "train": {
        "max_steps": 2,
        "checkpoint_interval": 2,
        "overrides": {
            "scheduler.warmup_steps": 1,
            "eval.downstream_tasks": "[]",
            "eval.max_batches": 1,
        },
    },
    "eval": {"checkpoints": [2], "tasks": ["arc_easy"], "limit": 4, "perplexity_documents": 2},
}
# The walk from a score to a raw source: each link's label, and text its page shows.
LINEAGE_WALK = [
    ("upstream/checkpoint", "weights_bytes"),
    ("upstream/training_run", "loss_plot"),
    ("upstream/token_shards/code", "splits"),
    ("upstream/curated_corpus", "removed_by_stage"),
    ("upstream/raw_source/code", "sample_documents"),
]
RUNNING = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)


def _set(key: str, value: object) -> Callable[[Path], None]:
    def edit(repo: Path) -> None:
        params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
        *parents, last = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[last] = value
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    return edit


def _append(path: str) -> Callable[[Path], None]:
    def edit(repo: Path) -> None:
        with (repo / path).open("a", encoding="utf-8") as file:
            file.write("\n# edited\n")

    return edit


#: Each edit, and the stages it must leave out of date (DVC's names).
EDITS: dict[str, tuple[Callable[[Path], None], set[str]]] = {
    "eval.limit": (_set("eval.limit", 3), {"downstream@2-arc_easy"}),
    "eval.tasks": (
        _set("eval.tasks", ["arc_easy", "copa"]),
        {"eval_data", "model_report", "downstream@2-copa"},
    ),
    "sources.code.max_mb": (
        _set("sources.code.max_mb", 0.2),
        {"sources/dvc.yaml:source-code-00000", "tag@code-00000", "dedup", "mix"},
    ),
    "train.max_steps": (_set("train.max_steps", 4), {"train"}),
    "curation.validation_fraction": (_set("curation.validation_fraction", 0.1), {"mix"}),
    "the mix config file": (
        _append("configs/curation/dolma_v1_5.yaml"),
        {"tag@code-00000", "tag@prose-00000", "dedup", "mix"},
    ),
    "the training config file": (_append("configs/tiny.yaml"), {"train"}),
    "the model report's code": (_append("olmo_assets/lab/report.py"), {"model_report"}),
}


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


def _locks(repo: Path) -> dict:
    """``dvc.lock`` and ``sources/dvc.lock`` together: every stage's recorded state."""
    stages: dict = {}
    for path in (repo / "dvc.lock", repo / "sources" / "dvc.lock"):
        stages |= yaml.safe_load(path.read_text())["stages"]
    return {"stages": stages}


def dvc_stage(key: str, partition: str | None) -> str:
    """The DVC stage behind a Dagster asset (and partition)."""
    name, *source = key.split("/")
    return stage_run(artifact_named(name)[0], source[0] if source else None, partition).dvc_name


@dataclass
class Scenario:
    repo: Path
    outputs: dict[str, str] = field(default_factory=dict)
    ran: dict[str, set[str]] = field(default_factory=dict)
    dvc_status: dict[str, dict] = field(default_factory=dict)
    """``dvc status --json`` after the demo ("demo") and after each edit."""
    dagster_stale: dict[str, dict[tuple[str, str | None], str]] = field(default_factory=dict)
    """What the webserver shows not fresh, after the demo and after each edit."""
    lock: dict = field(default_factory=dict)
    latest: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Output path -> (data version of its latest materialization, who recorded it)."""
    hashes: dict[str, str] = field(default_factory=dict)
    """Output path -> its content hash, when ``lock`` was read."""
    pulled: dict[str, str] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    provenance: tuple[int, list[str]] = (0, [])
    """Edges checked, and disagreements, over the demo's materializations."""
    links: tuple[int, list[str]] = (0, [])
    """Dagster links checked through GraphQL, and those naming nothing."""
    provenance_after_repro: tuple[int, list[str]] = (0, [])
    pages: list[Page] | None = None
    """The browser's walk from an evaluation to a raw source (None without Chromium)."""
    walk_error: str | None = None
    mlflow: dict = field(default_factory=dict)

    def lock_outs(self) -> dict[str, str]:
        return {
            out["path"]: out["md5"]
            for stage in self.lock["stages"].values()
            for out in stage.get("outs", [])
        }


class Shell:
    def __init__(self, repo: Path, env: dict[str, str]) -> None:
        self.repo, self.env = repo, env

    def __call__(self, *command: str, cwd: Path | None = None) -> str:
        done = subprocess.run(
            command,
            cwd=cwd or self.repo,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if done.returncode != 0:
            pytest.fail(f"`{' '.join(command)}` exited with {done.returncode}:\n{done.stdout}")
        return done.stdout


def _latest(repo: Path, lock: dict) -> dict[str, tuple[str, str]]:
    """Each DVC output's latest materialization in Dagster: data version, recorded by."""
    from dagster import AssetRecordsFilter, DagsterInstance

    from olmo_assets.defs.assets import asset_key
    from olmo_assets.defs.record import RECORDED_BY_TAG
    from olmo_assets.lab.params import Lab
    from olmo_assets.lab.pipeline import STAGES, stage_runs

    lab = Lab.load(repo)
    outs = {o["path"] for s in lock["stages"].values() for o in s.get("outs", [])}
    found = {}
    with DagsterInstance.from_config(str(repo / ".dagster")) as instance:
        for stage in STAGES:
            for run in stage_runs(lab, stage):
                for artifact in stage.writes:
                    path = run.folder(lab, artifact).relative_to(lab.repo).as_posix()
                    if path not in outs:
                        continue
                    source = run.keys.get("source")
                    records = instance.fetch_materializations(
                        AssetRecordsFilter(
                            asset_key=asset_key(artifact, source),
                            asset_partitions=[run.partition] if run.partition else None,
                        ),
                        limit=1,
                    ).records
                    assert records, f"no materialization of {path}"
                    event = records[0].asset_materialization
                    assert event is not None and event.tags is not None
                    launched = instance.get_run_by_id(records[0].run_id)
                    assert launched is not None
                    by = launched.tags.get(RECORDED_BY_TAG, "dagster")
                    found[path] = (event.tags["dagster/data_version"], by)
    return found


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    root = tmp_path_factory.mktemp("platform")
    repo = root / "repo"
    copy_repository(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in TINY_PARAMS.items():
        params[section] = values if section == "sources" else params[section] | values
    # One process per curation and tokenization stage: a pool of spawned workers costs each
    # stage run seconds, and no artifact depends on it (LabParams.workers).
    params["workers"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # The committed dvc.lock records the default parameters' pipeline; this one starts afresh.
    (repo / "dvc.lock").unlink(missing_ok=True)
    (repo / "sources" / "dvc.lock").unlink(missing_ok=True)

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DAGSTER_PIPES", "DVC_")) and k != "OLMO_LAB_REPO"
    }
    # Stage commands write __pycache__ into the code they depend on: .dvcignore must hide it.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    dvc_bin = Path(shutil.which("dvc") or REPO / ".venv-dvc" / "bin" / "dvc")
    ports = (free_port(), free_port())
    if not dvc_bin.is_file():
        pytest.fail("dvc is not installed: `make install` creates .venv-dvc with it")
    env |= {
        "PATH": os.pathsep.join(
            [str(Path(sys.executable).parent), str(dvc_bin.parent), env["PATH"]]
        ),
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "DAGSTER_HOME": str(repo / ".dagster"),
        # The UIs' addresses, which the materializations link to: served below.
        "OLMO_DAGSTER_URL": f"http://127.0.0.1:{ports[0]}",
        "OLMO_MLFLOW_URL": f"http://127.0.0.1:{ports[1]}",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    shell = Shell(repo, env)
    # The tiny sources' shard plan (and their DVC stages), as a user commits it.
    shell(sys.executable, "-m", "olmo_nn.cli.main", "lab", "shards", "--repo", str(repo))
    shell("git", "init", "-q")
    shell("git", "add", "-A")
    shell("git", "commit", "-qm", "a copy of the repository, tiny parameters")
    result = Scenario(repo)

    def step(name: str, *command: str, cwd: Path | None = None) -> str:
        output = shell(*command, cwd=cwd)
        result.outputs[name] = output
        result.ran[name] = set(RUNNING.findall(output))
        return output

    # Dagster -> DVC: the demo's own script materializes everything through Dagster.
    step("demo", sys.executable, "scripts/demo.py")
    result.dvc_status["demo"] = json.loads(shell("dvc", "status", "--json"))
    step("repro_after_demo", "dvc", "repro")

    # Staleness: what the UI shows against what DVC says, after each edit.
    serve = dict(env, OLMO_LAB_REPO=str(repo))
    with webserver(repo / "workspace.yaml", repo, serve, root / "webserver.log", ports[0]) as url:
        result.dagster_stale["demo"] = stale(url)
        result.provenance = provenance_mismatches(repo)
        result.links = unresolved_links(repo, url, env["OLMO_DAGSTER_URL"])
        result.mlflow = _mlflow_record(env["MLFLOW_TRACKING_URI"], repo)
        if chromium():
            backend = env["MLFLOW_TRACKING_URI"]
            # A failed walk is the browser test's failure, not every test's of this module.
            with mlflow_ui(ports[1], backend, env, root / "mlflow.log"), _kept(result):
                result.pages = walk_lineage(
                    env["OLMO_DAGSTER_URL"]
                    + "/assets/downstream_eval?"
                    + urlencode({"view": "partitions", "partition": "2|arc_easy"}),
                    Path(os.environ.get("OLMO_SCREENSHOTS", root / "screenshots")),
                    LINEAGE_WALK,
                    [
                        (env["OLMO_DAGSTER_URL"] + "/assets/model_report", "acc_by_step_plot"),
                        (env["OLMO_DAGSTER_URL"] + "/runs", "evaluation_downstream"),
                        (env["OLMO_DAGSTER_URL"] + "/overview", "training_checkpoint"),
                    ],
                )
        for name, (edit, _) in EDITS.items():
            edit(repo)
            reload(url)
            result.dagster_stale[name] = stale(url)
            result.dvc_status[name] = json.loads(shell("dvc", "status", "--json"))
            shell("git", "checkout", "-q", "--", ".")

        # DVC -> Dagster: a parameter change reruns its dependents; Dagster follows.
        EDITS["eval.limit"][0](repo)
        step("limit_changed", "dvc", "repro")
        reload(url)
        result.dagster_stale["after dvc repro"] = stale(url)
        # What dvc repro reran is recorded in Dagster with the same provenance.
        result.provenance_after_repro = provenance_mismatches(repo)
    result.lock = _locks(repo)
    result.latest = _latest(repo, result.lock)
    result.hashes = {path: dvc_md5(repo / path) for path in result.lock_outs()}
    shell("git", "commit", "-qam", "eval.limit 3, and dvc.lock")

    # The default remote (beside the repository) takes a push; a fresh clone pulls.
    step("push", "dvc", "push", "model_report")
    shell("git", "clone", "-q", str(repo), str(root / "clone"), cwd=root)
    step("pull", "dvc", "pull", "model_report", cwd=root / "clone")
    report = "lab/reports/model"
    result.pulled = {
        "committed": result.lock_outs()[report],
        "pulled": dvc_md5(root / "clone" / report),
    }

    step("exp_run", "dvc", "exp", "run", "-S", "eval.perplexity_documents=1")
    step("plots", "dvc", "plots", "show", "-o", str(root / "plots"))
    result.metrics = json.loads(shell("dvc", "metrics", "show", "--json"))
    return result


def test_the_demo_materializes_through_dagster_and_commits_every_stage_to_dvc(
    scenario: Scenario,
) -> None:
    assert "DVC: every stage is in dvc.lock, `dvc status` is clean" in scenario.outputs["demo"]
    assert scenario.dvc_status["demo"] == {}
    # Training told its progress to its run's event log, where the demo read it.
    assert re.search(r"^ +train: step 1/2 \(50%\) +loss \d", scenario.outputs["demo"], re.M)
    assert re.search(r"^ +train: step 2/2 \(100%\) +loss \d", scenario.outputs["demo"], re.M)
    assert scenario.ran["repro_after_demo"] == set()
    assert "Data and pipelines are up to date" in scenario.outputs["repro_after_demo"]
    assert scenario.dagster_stale["demo"] == {}


@pytest.mark.parametrize("edit", list(EDITS))
def test_dagster_shows_stale_exactly_the_stages_dvc_status_lists(
    scenario: Scenario, edit: str
) -> None:
    shown = scenario.dagster_stale[edit]
    dagster = {dvc_stage(key, partition) for key, partition in shown}
    dvc = set(scenario.dvc_status[edit])
    assert dagster == dvc == EDITS[edit][1], (shown, scenario.dvc_status[edit])


def test_a_new_task_is_missing_in_dagster_and_new_in_dvc(scenario: Scenario) -> None:
    assert scenario.dagster_stale["eval.tasks"][("downstream_eval", "2|copa")] == "MISSING"
    assert scenario.dagster_stale["eval.tasks"][("eval_task_data", None)] == "STALE"


def test_dvc_repro_reruns_only_dependents_and_dagster_follows(scenario: Scenario) -> None:
    assert scenario.ran["limit_changed"] == {"downstream@2-arc_easy", "model_report"}
    assert scenario.dagster_stale["after dvc repro"] == {}
    for path, md5 in scenario.lock_outs().items():
        assert scenario.hashes[path] == md5, path
        assert scenario.latest[path][0] == md5, path
    recorded_by = {path: by for path, (_, by) in scenario.latest.items()}
    assert recorded_by.pop("lab/eval/downstream/step2/arc_easy") == "dvc"
    assert recorded_by.pop("lab/reports/model") == "dvc"
    assert set(recorded_by.values()) == {"dagster"}


def test_default_remote_pushes_and_a_clone_pulls(scenario: Scenario) -> None:
    assert "pushed" in scenario.outputs["push"]
    assert scenario.pulled["pulled"] == scenario.pulled["committed"]


def test_exp_run_sets_a_parameter_and_reruns_its_dependents(scenario: Scenario) -> None:
    assert scenario.ran["exp_run"] == {"perplexity@2", "model_report"}
    assert "Ran experiment" in scenario.outputs["exp_run"]
    assert yaml.safe_load((scenario.repo / "params.yaml").read_text())["eval"] == {
        **TINY_PARAMS["eval"],
        "limit": 3,
        "perplexity_documents": 1,
    }


def test_metrics_and_plots_show_the_model_report(scenario: Scenario) -> None:
    metrics = scenario.metrics[""]["data"]["lab/reports/model/metrics.json"]["data"]
    assert set(metrics["eval"]["step000002"]) == {"arc_easy", "mean"}
    assert metrics["train"]["steps"] == 2
    assert metrics["perplexity"]["step000002"]
    page = (scenario.repo.parent / "plots" / "index.html").read_text()
    assert "Training loss" in page
    assert "Accuracy by checkpoint" in page


@contextmanager
def _kept(result: Scenario) -> Iterator[None]:
    try:
        yield
    except Exception as error:  # the browser test reports it
        result.walk_error = f"{type(error).__name__}: {error}"


def _mlflow_record(uri: str, repo: Path) -> dict:
    """The training run's per-task metric history and its experiment's kind, from MLflow."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run_id = (repo / "lab" / "runs" / "train" / "mlflow_run_id").read_text().strip()
    experiment = client.get_experiment(client.get_run(run_id).info.experiment_id)
    history = {
        key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        for key in ("downstream/arc_easy/acc", "downstream/arc_easy/acc_stderr")
    }
    return {"kind": experiment.tags.get("mlflow.experimentKind"), "history": history}


def test_every_materialization_records_the_data_versions_it_read(scenario: Scenario) -> None:
    # The tiny pipeline's 18 materializations read 36 upstream assets (edges of its graph).
    for edges, problems in (scenario.provenance, scenario.provenance_after_repro):
        assert edges == 36
        assert problems == []


def test_every_dagster_link_resolves_to_a_materialized_asset_or_partition(
    scenario: Scenario,
) -> None:
    checked, problems = scenario.links
    assert checked == 36  # an upstream link per edge
    assert problems == []


def test_the_training_run_in_mlflow_has_a_curve_per_task(scenario: Scenario) -> None:
    assert scenario.mlflow["kind"] == "custom_model_development"
    acc = scenario.mlflow["history"]["downstream/arc_easy/acc"]
    assert [step for step, _ in acc] == [2]
    assert 0.0 <= acc[0][1] <= 1.0


def test_a_browser_follows_a_score_to_its_checkpoint_and_raw_source(scenario: Scenario) -> None:
    assert scenario.walk_error is None, scenario.walk_error
    if scenario.pages is None:
        if os.environ.get("OLMO_REQUIRE_BROWSER"):
            pytest.fail("Chromium is not installed, and this run requires the browser test")
        pytest.skip("Chromium is not installed (make test installs it when run as root)")
    *pages, report, runs, timeline = scenario.pages
    assert [p.url.split("/assets/")[1].split("?")[0] for p in pages] == [
        "downstream_eval",
        "checkpoint",
        "training_run",
        "token_shards/code",
        "curated_corpus",
        "raw_source/code",
    ]
    assert "partition=2" in pages[1].url
    for page in pages:
        assert page.screenshot.stat().st_size > 10_000, page.screenshot
    evaluation, checkpoint, training, *_, raw = pages
    assert "acc" in evaluation.text and "mlflow_run" in evaluation.text
    assert "sha256" in checkpoint.text and "sample_documents" in checkpoint.text
    # The loss plot is on the page, served by the MLflow UI, not behind a toggle.
    assert (training.images, training.loaded, training.clipped) == (1, 1, 0)
    assert "sample_documents" in raw.text
    # The comparison view: every plot of the model report loaded, the full table shown.
    assert (report.images, report.loaded, report.clipped) == (3, 3, 0)
    # (A table's cells are tab-separated in the page's text.)
    assert re.search(r"(^|\t)step 2(\t|$)", report.text, re.M) and "unconditional" in report.text
    assert re.search(r"(^|\t)\d\.\d{3} ± \d\.\d{3}(\t|$)", report.text, re.M)
    # Runs have names: each stage run in its job, the partition's with its partition.
    jobs = set(
        re.findall(
            r"^((?:curation|tokenization|evaluation)(?:_\w+)?|training|training_checkpoint)$",
            runs.text,
            re.M,
        )
    )
    # Every job of the code location (test_definitions pins their names).
    assert jobs == {
        job_name(stage, source)
        for stage in STAGES
        for source in (TINY_PARAMS["sources"] if stage.fanout is Fanout.SHARD else [None])
    }
    assert "partition: 2|arc_easy" in runs.text
    assert "__ephemeral_asset_job__" not in runs.text
    # The overview's timeline has a row per job that ran.
    for job in jobs:
        assert re.search(rf"^{job}$", timeline.text, re.M), job
