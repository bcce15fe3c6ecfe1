"""MLflow artifacts of the lab: plots at content-addressed paths, the corpus report's run."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from olmo_assets.lab import links
from olmo_assets.lab.params import Lab
from olmo_assets.lab.steps.reports import corpus_report
from olmo_assets.lab.steps.results import StepResult
from olmo_assets.lab.tracking import log_corpus_report, log_plot, training_run_id


@pytest.fixture(scope="module")
def client(built_lab: Lab) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{built_lab.repo / '.mlflow' / 'mlflow.db'}")


@pytest.fixture(scope="module")
def corpus(built_lab: Lab) -> StepResult:
    return corpus_report(built_lab)


def test_each_version_of_a_plot_keeps_its_own_artifact_path(
    built_lab: Lab, client: Any, tmp_path: Path
) -> None:
    run_id = training_run_id(built_lab)
    assert run_id is not None
    plot = tmp_path / "loss.png"
    paths = []
    for version in (b"\x89PNG first", b"\x89PNG second"):
        plot.write_bytes(version)
        paths.append(log_plot(built_lab, run_id, plot))
    digests = [hashlib.md5(v).hexdigest() for v in (b"\x89PNG first", b"\x89PNG second")]
    assert paths == [f"plots/{digests[0]}/loss.png", f"plots/{digests[1]}/loss.png"]
    for path, version in zip(paths, (b"\x89PNG first", b"\x89PNG second"), strict=True):
        local = client.download_artifacts(run_id, path, str(tmp_path / "downloaded"))
        assert Path(local).read_bytes() == version
    # The same bytes logged again land where they were: one address per version.
    plot.write_bytes(b"\x89PNG first")
    assert log_plot(built_lab, run_id, plot) == paths[0]
    query = parse_qs(urlparse(links.mlflow_artifact_url(run_id, paths[0])).query)
    assert query == {"path": [paths[0]], "run_uuid": [run_id]}


def test_corpus_report_has_a_run_with_its_files(
    built_lab: Lab, client: Any, corpus: StepResult
) -> None:
    run = client.get_run(corpus.metadata["mlflow_run_id"])
    experiment = client.get_experiment_by_name(built_lab.mlflow_experiment)
    assert run.info.experiment_id == experiment.experiment_id
    assert run.info.run_name == "corpus report"
    assert run.info.status == "FINISHED"
    logged = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "corpus_report")}
    assert logged == {p.name for p in built_lab.corpus_report.iterdir() if p.is_file()}
    assert {p.name for p in corpus.images.values()} <= logged


def test_corpus_report_rerun_with_the_same_bytes_reuses_its_run(
    built_lab: Lab, client: Any, corpus: StepResult
) -> None:
    again = corpus_report(built_lab)
    assert again.metadata["mlflow_run_id"] == corpus.metadata["mlflow_run_id"]
    experiment = client.get_experiment_by_name(built_lab.mlflow_experiment)
    runs = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`olmo.kind` = 'corpus_report'"
    )
    assert [r.info.run_id for r in runs] == [corpus.metadata["mlflow_run_id"]]


def test_a_changed_corpus_report_gets_a_new_run(
    built_lab: Lab, client: Any, corpus: StepResult, tmp_path: Path
) -> None:

    changed = tmp_path / "corpus_report"
    shutil.copytree(built_lab.corpus_report, changed)
    (changed / "extra.txt").write_text("one more file\n", encoding="utf-8")
    run_id = log_corpus_report(built_lab, changed)
    try:
        assert run_id != corpus.metadata["mlflow_run_id"]
        assert "extra.txt" in {
            Path(a.path).name for a in client.list_artifacts(run_id, "corpus_report")
        }
    finally:
        client.delete_run(run_id)
