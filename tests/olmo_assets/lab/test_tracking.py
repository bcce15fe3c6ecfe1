"""MLflow: evaluation runs nest under the training run, carry their checkpoint, reuse on rerun."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from olmo_assets.lab.params import Lab
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
from olmo_nn.train.callbacks.mlflow_logger import content_hash


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
            metrics = {r["metric"]: r["value"] for r in _results(built_lab.downstream(step, task))}
            assert run.data.metrics["acc"] == metrics["acc"]
            assert {"acc_none", "acc_per_token", "acc_per_char", "acc_unconditional"} <= set(
                run.data.metrics
            )
            (history,) = client.get_metric_history(run.info.run_id, "acc")
            assert history.step == step


def test_perplexity_runs_log_every_source(built_lab: Lab, client: Any) -> None:
    (run,) = _runs(client, built_lab, "perplexity/step000004")
    rows = _results(built_lab.perplexity(4))
    expected = {f"{r['source']}/{r['metric']}": r["value"] for r in rows}
    assert run.data.metrics == expected
    assert "prose/bits_per_byte" in run.data.metrics
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
