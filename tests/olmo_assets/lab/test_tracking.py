"""MLflow: evaluation runs nest under the training run, carry their checkpoint, reuse on rerun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from olmo_assets.lab.hashing import dvc_md5
from olmo_assets.lab.params import Lab
from olmo_assets.lab.pipeline import stage_named
from olmo_assets.lab.steps.evaluation import evaluate_downstream
from olmo_assets.lab.steps.results import StepResult
from olmo_assets.lab.tracking import (
    CHECKPOINT_SHA256_TAG,
    EVAL_KEY_TAG,
    PARENT_RUN_TAG,
    TRAINING_RUN_TAG,
    EvaluationRun,
    experiment_id,
    log_evaluation,
    training_run_id,
)
from olmo_nn.checkpoint.integrity import content_hash

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def client(built_lab: Lab) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{built_lab.repo / '.mlflow' / 'mlflow.db'}")


def _runs(client: Any, lab: Lab, key: str) -> list[Any]:
    experiment = client.get_experiment_by_name(lab.mlflow_experiment)
    return client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{EVAL_KEY_TAG}` = '{key}'"
    )


def _results(folder: Path) -> list[dict[str, Any]]:
    return json.loads((folder / "results.json").read_text(encoding="utf-8"))


def test_experiment_is_the_pipelines_with_local_artifacts(built_lab: Lab, client: Any) -> None:
    experiment = client.get_experiment_by_name(built_lab.mlflow_experiment)
    assert built_lab.mlflow_experiment == f"olmo-lab/{built_lab.repo.name}"
    assert experiment.artifact_location == (built_lab.repo / ".mlflow" / "artifacts").as_uri()
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    training = client.get_run(training_run_id(built_lab))
    assert training.info.experiment_id == experiment.experiment_id
    assert training.info.status == "FINISHED"


def test_downstream_runs_link_checkpoint_and_training_run(built_lab: Lab, client: Any) -> None:
    training = training_run_id(built_lab)
    for step in built_lab.params.eval.checkpoints:
        checkpoint = built_lab.checkpoint(step)
        for task in built_lab.params.eval.tasks:
            (run,) = _runs(client, built_lab, f"downstream/step{step:06d}/{task}")
            tags = run.data.tags
            assert run.info.run_name == f"eval step{step:06d} {task}"
            assert tags[PARENT_RUN_TAG] == tags[TRAINING_RUN_TAG] == training
            assert tags[CHECKPOINT_SHA256_TAG] == content_hash(checkpoint)
            assert tags["olmo.checkpoint_path"] == f"lab/runs/train/checkpoints/{checkpoint.name}"
            assert tags["olmo.task"] == task
            assert run.data.params["limit"] == str(built_lab.params.eval.limit)
            rows = _results(built_lab.downstream(step, task))
            # Every row under its qualified key: nine tasks never share one "acc".
            assert run.data.metrics == {
                f"downstream/{task}/{r['metric']}": r["value"] for r in rows
            }
            assert {
                f"downstream/{task}/{m}"
                for m in ("acc_stderr", "chance", "acc_per_token", "acc_per_token_stderr")
            } <= set(run.data.metrics)
            (history,) = client.get_metric_history(run.info.run_id, f"downstream/{task}/acc")
            assert history.step == step


def test_perplexity_runs_log_every_source(built_lab: Lab, client: Any) -> None:
    (run,) = _runs(client, built_lab, "perplexity/step000004")
    rows = _results(built_lab.perplexity(4))
    expected = {
        "/".join(filter(None, ("perplexity", r["source"], r.get("domain"), r["metric"]))): r[
            "value"
        ]
        for r in rows
    }
    assert run.data.metrics == expected
    assert "perplexity/prose/bits_per_byte" in run.data.metrics
    assert run.data.tags[PARENT_RUN_TAG] == training_run_id(built_lab)


def test_rerun_reuses_the_run_and_outputs_hold_no_run_ids(built_lab: Lab, client: Any) -> None:
    key = "downstream/step000004/arc_easy"
    (before,) = _runs(client, built_lab, key)
    result = evaluate_downstream(built_lab, 4, "arc_easy")
    assert result.metadata["mlflow_run_id"] == before.info.run_id
    assert [r.info.run_id for r in _runs(client, built_lab, key)] == [before.info.run_id]
    # Nothing MLflow-specific in the folders DVC hashes.
    for folder in (built_lab.root / "eval", built_lab.model_report):
        for path in folder.rglob("*.json"):
            assert before.info.run_id not in path.read_text(encoding="utf-8")


def test_a_different_result_gets_a_new_run(built_lab: Lab, client: Any) -> None:
    results = built_lab.root / "scratch" / "results.json"
    results.parent.mkdir(exist_ok=True)
    results.write_text('[{"metric": "acc", "value": 1.0}]\n', encoding="utf-8")
    evaluation = EvaluationRun(
        key="downstream/step000002/arc_easy",
        run_name="eval step000002 arc_easy",
        step=2,
        checkpoint=built_lab.checkpoint(2),
        checkpoint_sha256=content_hash(built_lab.checkpoint(2)),
        results=results,
        metrics={"acc": 1.0},
    )
    (existing,) = _runs(client, built_lab, evaluation.key)
    run_id = log_evaluation(built_lab, evaluation)
    try:
        assert run_id != existing.info.run_id
        assert log_evaluation(built_lab, evaluation) == run_id
        assert len(_runs(client, built_lab, evaluation.key)) == 2
    finally:
        client.delete_run(run_id)
        results.unlink()


def test_model_report_is_attached_to_the_training_run(
    built_lab: Lab, client: Any, model_report: StepResult
) -> None:
    training = training_run_id(built_lab)
    assert model_report.metadata["mlflow_run_id"] == training
    names = {Path(a.path).name for a in client.list_artifacts(training, "model_report")}
    assert {"metrics.json", "loss.csv", "loss.png"} <= names


def test_an_experiment_made_without_a_kind_gets_the_model_training_view(
    built_lab: Lab, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    lab = Lab(tmp_path, built_lab.params, built_lab.values)
    (tmp_path / ".mlflow").mkdir()
    client = MlflowClient(tracking_uri=lab.mlflow_uri)
    made = client.create_experiment(lab.mlflow_experiment)
    assert "mlflow.experimentKind" not in client.get_experiment(made).tags
    assert experiment_id(lab) == made
    assert client.get_experiment(made).tags["mlflow.experimentKind"] == "custom_model_development"


def _history(client: Any, run_id: str | None, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def _value(folder: Path, metric: str, source: str | None = None) -> float:
    rows = _results(folder)
    return next(
        r["value"]
        for r in rows
        if r["metric"] == metric
        and (source is None or (r["source"], r.get("domain")) == (source, None))
    )


def test_the_training_run_has_a_curve_per_task_and_source(built_lab: Lab, client: Any) -> None:
    training = training_run_id(built_lab)
    steps = built_lab.params.eval.checkpoints
    for task in built_lab.params.eval.tasks:
        for metric in ("acc", "acc_stderr"):
            assert _history(client, training, f"downstream/{task}/{metric}") == [
                (step, _value(built_lab.downstream(step, task), metric)) for step in steps
            ]
    for metric in ("bits_per_byte", "perplexity"):
        assert _history(client, training, f"perplexity/prose/{metric}") == [
            (step, _value(built_lab.perplexity(step), metric, "prose")) for step in steps
        ]


def test_reruns_and_the_model_report_add_no_duplicate_points(
    built_lab: Lab, client: Any, model_report: StepResult
) -> None:
    training = training_run_id(built_lab)
    before = _history(client, training, "downstream/arc_easy/acc")
    evaluate_downstream(built_lab, 4, "arc_easy")
    stage_named("model_report").run(built_lab)
    assert _history(client, training, "downstream/arc_easy/acc") == before
    assert [step for step, _ in before] == built_lab.params.eval.checkpoints


def test_an_evaluation_run_lasts_as_long_as_the_evaluation(built_lab: Lab, client: Any) -> None:
    key = "downstream/step000004/winogrande"
    (logged,) = _runs(client, built_lab, key)
    client.delete_run(logged.info.run_id)  # so the rerun logs a run of its own
    called = int(time.time() * 1000)
    result = evaluate_downstream(built_lab, 4, "winogrande")
    returned = int(time.time() * 1000) + 1
    (run,) = _runs(client, built_lab, key)
    assert run.info.run_id == result.metadata["mlflow_run_id"] != logged.info.run_id
    written = int((built_lab.downstream(4, "winogrande") / "results.json").stat().st_mtime * 1000)
    # It began when the evaluation did (before the model was loaded and every example
    # scored, so before the results were written) and ended after they were.
    assert called <= run.info.start_time <= written <= run.info.end_time <= returned
    assert run.info.status == "FINISHED"


def test_runs_carry_the_commit_and_their_dagster_page(built_lab: Lab, client: Any) -> None:
    training = client.get_run(training_run_id(built_lab))
    (downstream,) = _runs(client, built_lab, "downstream/step000004/arc_easy")
    (perplexity,) = _runs(client, built_lab, "perplexity/step000002")
    pages = {
        training.info.run_id: "/assets/training_run",
        downstream.info.run_id: "/assets/downstream_eval?view=partitions&partition=4%7Carc_easy",
        perplexity.info.run_id: "/assets/perplexity_eval?view=partitions&partition=2",
    }
    for run in (training, downstream, perplexity):
        tags = run.data.tags
        # The checkout's commit when the run was logged (others may have committed since).
        commit = tags["mlflow.source.git.commit"]
        assert len(commit) == 40
        ancestor = ["git", "-C", str(REPO), "merge-base", "--is-ancestor", commit, "HEAD"]
        assert subprocess.run(ancestor, check=False).returncode == 0
        assert tags["olmo.git_dirty"] in ("true", "false")
        assert tags["olmo.dagster_url"] == "http://127.0.0.1:3000" + pages[run.info.run_id]
    assert training.data.tags["olmo.kind"] == "training"


def test_the_training_run_records_its_token_shards_as_datasets(built_lab: Lab, client: Any) -> None:
    training = client.get_run(training_run_id(built_lab))
    inputs = {i.dataset.name: i for i in training.inputs.dataset_inputs}
    # One dataset per source shard and split.
    # (The small lab's code has no validation split.)
    assert set(inputs) == {
        "token_shards/code/00000/train",
        "token_shards/prose/00000/train",
        "token_shards/prose/00000/validation",
    }
    train = inputs["token_shards/prose/00000/train"]
    folder = built_lab.token_shards("prose", "00000") / "train"
    assert train.dataset.digest == dvc_md5(folder)
    assert json.loads(train.dataset.source) == {"uri": str(folder.resolve())}
    assert {t.key: t.value for t in train.tags} == {"mlflow.data.context": "training"}
    manifest = json.loads((folder / "manifest.json").read_text())
    profile = json.loads(train.dataset.profile)
    assert profile["num_tokens"] == sum(f["num_tokens"] for f in manifest["files"])
    assert profile["token_shards_data_version"] == dvc_md5(folder.parent)
    validation = inputs["token_shards/prose/00000/validation"]
    assert {t.key: t.value for t in validation.tags} == {"mlflow.data.context": "validation"}


def test_an_evaluation_run_records_its_checkpoint_as_input(built_lab: Lab, client: Any) -> None:
    (run,) = _runs(client, built_lab, "downstream/step000002/arc_easy")
    (checkpoint,) = run.inputs.dataset_inputs
    sha256 = content_hash(built_lab.checkpoint(2))
    assert checkpoint.dataset.name == "checkpoint step000002"
    assert checkpoint.dataset.digest == sha256[:36]
    assert json.loads(checkpoint.dataset.profile) == {"sha256": sha256}
    assert json.loads(checkpoint.dataset.source)["uri"] == str(built_lab.checkpoint(2).resolve())


def test_stages_opening_a_new_store_at_once_take_turns_creating_it(tmp_path: Path) -> None:
    """Four processes open a new SQLite store together (stages run in parallel): each one
    succeeds. Without the lock, MLflow's concurrent schema migrations fail ("Online migration
    expected to match one row")."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_bytes((Path(__file__).parents[3] / "params.yaml").read_bytes())
    script = (
        "import sys; from olmo_assets.lab.params import Lab; "
        "from olmo_assets.lab.tracking import experiment_id; "
        "print(experiment_id(Lab.load(sys.argv[1])))"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(repo)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outcomes = [(p.wait(timeout=300), *p.communicate()) for p in processes]
    assert [code for code, _, _ in outcomes] == [0, 0, 0, 0], [err[-500:] for _, _, err in outcomes]
    # One experiment, found or created by each.
    assert len({out.strip() for _, out, _ in outcomes}) == 1
