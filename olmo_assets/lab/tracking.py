"""MLflow for the lab: one experiment per pipeline, a run per training and per evaluation.

The training run is the trainer's own (``olmo_nn.train.callbacks.mlflow_logger``); it writes
its id to ``lab/runs/train/mlflow_run_id``. Each evaluation step adds a run to the same
experiment, nested under the training run (``mlflow.parentRunId``) and tagged with the
checkpoint it scored: its path relative to the repository and its content hash.

An evaluation rerun that reproduces a result already logged (same key, same checkpoint hash,
same ``results.json`` bytes) reuses that run instead of adding a duplicate; a different
checkpoint or a different result gets a new run, so the experiment keeps the history.

Metric keys name what they measure, the same in an evaluation run and in the training run:
``downstream/<task>/acc`` (and ``acc_stderr``, ``acc_<normalization>``, ``chance``; a
generative task's ``exact_match`` and ``f1``), ``<task>`` its partition key (``arc_easy-mc``), and
``perplexity/<source>/bits_per_byte`` (and ``perplexity``), at step = the checkpoint's step.
The headline ones are also logged into the training run, so MLflow draws a curve per task
and source there; a point already there (same key, step and value) is not logged again, as
MLflow would keep both.

Every run carries the commit of the code (``mlflow.source.git.commit``, ``olmo.git_dirty``)
and the address of its materialization in Dagster (``olmo.dagster_url``); the training run
records the token shards it read as MLflow datasets, an evaluation run its checkpoint.

Every step that draws plots has a run to hold them: the training run (training, model
report) or a run "corpus report" (the corpus report's files, reused for the same bytes).
:func:`log_plot` stores a plot at ``plots/<md5>/<name>``, an address per version.

Nothing here writes into the steps' output folders: MLflow ids and timestamps stay in the
tracking store, so the folders DVC hashes are the same on every rerun. ``mlflow`` is
imported inside the functions (it takes over a second to import).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olmo_assets.lab.database import store_lock
from olmo_assets.lab.params import Lab

__all__ = [
    "CHECKPOINT_SHA256_TAG",
    "CORPUS_REPORT_ARTIFACTS",
    "DAGSTER_URL_TAG",
    "EVAL_KEY_TAG",
    "GIT_COMMIT_TAG",
    "GIT_DIRTY_TAG",
    "KIND_TAG",
    "MODEL_REPORT_URL_TAG",
    "PARENT_RUN_TAG",
    "RESULTS_SHA256_TAG",
    "TRAINING_RUN_TAG",
    "EvaluationRun",
    "downstream_key",
    "experiment_id",
    "git_tags",
    "log_corpus_report",
    "log_evaluation",
    "log_plot",
    "log_report",
    "log_training_inputs",
    "perplexity_key",
    "stage_page",
    "training_run_id",
    "training_run_tags",
]

EVAL_KEY_TAG = "olmo.eval_key"
"""``downstream/step000080/arc_easy`` or ``perplexity/step000080``: what was evaluated."""
CHECKPOINT_SHA256_TAG = "olmo.checkpoint_sha256"
RESULTS_SHA256_TAG = "olmo.results_sha256"
TRAINING_RUN_TAG = "olmo.training_run_id"
PARENT_RUN_TAG = "mlflow.parentRunId"
"""MLflow's own tag: the UI nests a run under this one."""
KIND_TAG = "olmo.kind"
"""``training``, ``downstream``, ``perplexity`` or ``corpus_report``: what the run records."""
GIT_COMMIT_TAG = "mlflow.source.git.commit"
"""MLflow's own tag for the commit of the code that ran (shown on the run's page)."""
GIT_DIRTY_TAG = "olmo.git_dirty"
"""``true`` when tracked files differed from that commit."""
MODEL_REPORT_URL_TAG = "olmo.model_report.dagster_url"
"""On the training run: the Dagster page of the model report attached to it."""
DAGSTER_URL_TAG = "olmo.dagster_url"
"""The run's materialization in Dagster: its asset page (and partition)."""
REPORT_ARTIFACTS = "model_report"
"""Where the model report's files go among the training run's artifacts."""
CORPUS_REPORT_ARTIFACTS = "corpus_report"
"""Where the corpus report's files go among its run's artifacts."""
REPORT_MD5_TAG = "olmo.report_md5"
"""The corpus report folder's DVC hash: a rerun with the same bytes reuses its run."""
PLOTS_ARTIFACTS = "plots"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""MLflow 3 opens an experiment of kind ``custom_model_development`` in the model-training
view (runs, metrics, charts) rather than the GenAI view (traces)."""
EXPERIMENT_KIND = "custom_model_development"
_RUN_ID_FILE = "mlflow_run_id"


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (None for a server or other store)."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


def _client(lab: Lab) -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    uri = lab.mlflow_uri
    if uri.startswith("postgresql"):
        # OLMO_LAB_DATABASE_URL's schema `mlflow` (created here) or a configured database:
        # opening a new store creates its tables, one process at a time (an advisory lock).
        with store_lock(uri):
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
        return client
    database = _sqlite_file(uri)
    if database is None:
        return MlflowClient(tracking_uri=uri)
    # The embedded store (by default ``.mlflow/mlflow.db`` in the repository, git-ignored):
    # SQLite creates the file, not its folder. Opening the store creates and migrates its
    # schema, which two processes must not do at once (stages run in parallel: a corpus
    # report beside the training run): one at a time, under a lock beside the database.
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.parent / f".{database.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        client = MlflowClient(tracking_uri=lab.mlflow_uri)
        client.search_experiments(max_results=1)
    return client


def experiment_id(lab: Lab, client: Any = None) -> str:
    """The pipeline's experiment (created on first use, in MLflow's model-training view);
    also migrates a new SQLite store.

    The train step calls this before launching the trainer, so the trainer finds the
    experiment and the store's schema made (stages that open the store at once take turns
    migrating it: see :func:`_client`). With a SQLite
    store, artifacts go to ``artifacts/`` beside the database (``.mlflow/artifacts`` by
    default), with PostgreSQL to the repository's ``.mlflow/artifacts``, rather than the
    working directory; a server chooses its own.
    """
    from mlflow.exceptions import MlflowException

    client = client or _client(lab)
    name = lab.mlflow_experiment
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            # An experiment created before the kind was set (or by MLflow's defaults).
            client.set_experiment_tag(
                experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
            )
        return str(experiment.experiment_id)
    database = _sqlite_file(lab.mlflow_uri)
    if database is not None:
        location: str | None = (database.parent / "artifacts").resolve().as_uri()
    elif lab.mlflow_uri.startswith("postgresql"):
        # A database holds no files: the artifacts go to the repository's `.mlflow/`.
        location = (lab.repo / ".mlflow" / "artifacts").resolve().as_uri()
    else:
        location = None  # a tracking server chooses
    try:
        return str(
            client.create_experiment(
                name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
        )
    except MlflowException:
        # Another step created it meanwhile.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def training_run_id(lab: Lab) -> str | None:
    """The training run's MLflow id, as the trainer recorded it (None if it did not)."""
    path = lab.run_dir / _RUN_ID_FILE
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8").strip() or None


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _relative(lab: Lab, path: Path) -> str:
    """A path as the repository names it, so a tag means the same in any checkout."""
    return Path(os.path.relpath(path, lab.repo)).as_posix()


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def downstream_key(task: str, metric: str) -> str:
    """``downstream/<task>/<metric>``: the MLflow key of a downstream result row."""
    return f"downstream/{task}/{metric}"


def perplexity_key(source: str, metric: str, domain: str | None = None) -> str:
    """``perplexity/<source>[/<domain>]/<metric>``: the MLflow key of a perplexity row."""
    return "/".join(filter(None, ("perplexity", source, domain, metric)))


def _now_ms() -> int:
    return int(time.time() * 1000)


def git_tags() -> dict[str, str]:
    """The commit of the lab's code and whether tracked files had changes (empty outside git)."""
    from olmo_assets.lab.git import code_commit

    found = code_commit()
    if found is None:
        return {}
    return {GIT_COMMIT_TAG: found[0], GIT_DIRTY_TAG: str(found[1]).lower()}


def stage_page(stage: str, *arguments: str) -> str:
    """The Dagster page of what stage ``stage`` run with ``arguments`` writes first (its
    primary artifact), at its partition: ``stage_page("downstream", "100", "arc_easy")``."""
    from olmo_assets.lab import links
    from olmo_assets.lab.pipeline import StageRun, stage_named

    run = StageRun(stage_named(stage), arguments)
    return links.dagster_asset_url(run.asset_path(run.stage.writes[0]), run.partition)


def training_run_tags() -> dict[str, str]:
    """The tags the train step has the trainer put on its run: kind, commit, Dagster page."""
    return {KIND_TAG: "training", **git_tags(), DAGSTER_URL_TAG: stage_page("train")}


@dataclass
class EvaluationRun:
    """What one evaluation step logs: where its result came from, and its numbers."""

    key: str
    """What was evaluated: ``downstream/step000080/arc_easy``, ``perplexity/step000080``."""
    run_name: str
    step: int
    """The checkpoint's training step (the step the metrics are logged at)."""
    checkpoint: Path
    checkpoint_sha256: str
    results: Path
    """The step's ``results.json``: its hash tells a rerun with the same outcome from a new one."""
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    """Every number of the result, by its qualified key (``downstream/arc_easy/acc``)."""
    training_metrics: dict[str, float] = field(default_factory=dict)
    """The headline numbers also logged into the training run (a curve per task there)."""
    tags: dict[str, str] = field(default_factory=dict)
    started_ms: int | None = None
    """When the evaluation began (ms since the epoch): the run's start; it ends when logged."""

    @classmethod
    def of_checkpoint(
        cls,
        kind: str,
        step: int,
        name: str,
        checkpoint: Path,
        checkpoint_sha256: str,
        results: Path,
        *,
        params: dict[str, Any],
        metrics: dict[str, float],
        training_metrics: dict[str, float],
        started_ms: int,
        tags: dict[str, str] | None = None,
    ) -> EvaluationRun:
        """Evaluation ``kind`` (the stage: downstream, perplexity) of ``name`` (a task, or "")
        on the checkpoint of ``step`` (whose content hash the caller has already checked):
        its key, run name and Dagster page."""
        label = f"step{step:06d}"
        return cls(
            key="/".join([kind, label, name] if name else [kind, label]),
            run_name=" ".join(["eval" if kind == "downstream" else kind, label, name]).strip(),
            step=step,
            checkpoint=checkpoint,
            checkpoint_sha256=checkpoint_sha256,
            results=results,
            params=params,
            metrics=metrics,
            training_metrics=training_metrics,
            tags={
                KIND_TAG: kind,
                DAGSTER_URL_TAG: stage_page(kind, str(step), *([name] if name else [])),
                **(tags or {}),
            },
            started_ms=started_ms,
        )


def _find_run(client: Any, experiment: str, tags: dict[str, str]) -> Any | None:
    filters = " and ".join(f"tags.`{k}` = {_quote(v)}" for k, v in tags.items())
    runs = client.search_runs(
        [experiment],
        filter_string=f"{filters} and attributes.status = 'FINISHED'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0] if runs else None


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _log_new_points(client: Any, run_id: str, step: int, metrics: dict[str, float]) -> int:
    """Log ``metrics`` at ``step`` into run ``run_id``, but for the points it already holds
    (same key, step and value): MLflow keeps every value logged, so a rerun that reproduces
    a result would otherwise draw a second dot. Returns how many points were logged."""
    from mlflow.entities import Metric

    timestamp = _now_ms()
    new = [
        Metric(key, float(value), timestamp, step)
        for key, value in sorted(metrics.items())
        if not any(
            point.step == step and _same(point.value, float(value))
            for point in client.get_metric_history(run_id, key)
        )
    ]
    for i in range(0, len(new), 1000):
        client.log_batch(run_id, metrics=new[i : i + 1000])
    return len(new)


def _dataset_input(name: str, digest: str, path: Path, context: str, **profile: Any) -> Any:
    """An MLflow dataset input: a local folder by name, content hash and path.

    MLflow stores a digest of at most 36 characters (its own are 8): a DVC folder hash
    (``<md5>.dir``) fits whole; a longer one goes whole into the profile.
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(
        name=name,
        digest=digest[:36],
        source_type="local",
        source=json.dumps({"uri": str(path.resolve())}),
        profile=json.dumps(profile, sort_keys=True) if profile else None,
    )
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])


def log_evaluation(lab: Lab, evaluation: EvaluationRun) -> str:
    """Log ``evaluation`` as a run of the pipeline's experiment; returns the run id.

    A FINISHED run with the same key, checkpoint hash and results hash is reused (its
    links to the training run are refreshed); otherwise a new run is created, from
    ``started_ms`` to now. Metrics are logged at ``step`` = the checkpoint's step, and the
    ``training_metrics`` also into the training run (but for points it already holds).
    """
    from mlflow.entities import Metric, Param, RunTag

    client = _client(lab)
    experiment = experiment_id(lab, client)
    identity = {
        EVAL_KEY_TAG: evaluation.key,
        CHECKPOINT_SHA256_TAG: evaluation.checkpoint_sha256,
        RESULTS_SHA256_TAG: _file_sha256(evaluation.results),
    }
    links = {
        "olmo.checkpoint_path": _relative(lab, evaluation.checkpoint),
        "olmo.results_path": _relative(lab, evaluation.results),
        "olmo.step": str(evaluation.step),
        **evaluation.tags,
    }
    parent = training_run_id(lab)
    if parent is not None:
        links |= {TRAINING_RUN_TAG: parent, PARENT_RUN_TAG: parent}
    else:
        warnings.warn(
            f"{lab.run_dir / _RUN_ID_FILE} does not exist: the evaluation run "
            f"{evaluation.run_name!r} is not linked to a training run",
            stacklevel=2,
        )
    existing = _find_run(client, experiment, identity)
    if existing is not None:
        run_id = str(existing.info.run_id)
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in links.items()])
    else:
        run = client.create_run(
            experiment,
            start_time=evaluation.started_ms,
            run_name=evaluation.run_name,
            tags=identity | git_tags() | links,
        )
        run_id = str(run.info.run_id)
        try:
            ended = _now_ms()
            client.log_batch(
                run_id,
                metrics=[
                    Metric(key, float(value), ended, evaluation.step)
                    for key, value in sorted(evaluation.metrics.items())
                ],
                params=[Param(k, str(v)) for k, v in sorted(evaluation.params.items())],
            )
            client.log_inputs(
                run_id,
                datasets=[
                    _dataset_input(
                        f"checkpoint step{evaluation.step:06d}",
                        evaluation.checkpoint_sha256,
                        evaluation.checkpoint,
                        "evaluation",
                        sha256=evaluation.checkpoint_sha256,
                    )
                ],
            )
        except BaseException:
            client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id, status="FINISHED", end_time=ended)
    if parent is not None:
        # Also for a reused run: the training run may be a newer one with the same weights.
        _log_new_points(client, parent, evaluation.step, evaluation.training_metrics)
    return run_id


def log_training_inputs(lab: Lab) -> str | None:
    """Record the token shards the training run read as its MLflow datasets (``train`` and,
    when the run validated on them, ``validation``), by DVC hash and path; the run's id.

    MLflow keeps one input per dataset name and digest, so a rerun adds nothing. Returns
    None, with a warning, when the trainer recorded no MLflow run.
    """
    run_id = training_run_id(lab)
    if run_id is None:
        warnings.warn(
            f"{lab.run_dir / _RUN_ID_FILE} does not exist: the token shards are not recorded "
            "as the training run's datasets in MLflow",
            stacklevel=2,
        )
        return None
    from olmo_assets.lab.hashing import dvc_md5
    from olmo_assets.lab.steps.tokenization import split_folders

    inputs = []
    versions: dict[Path, str] = {}  # each shard's hash, once
    for split, context in (("train", "training"), ("validation", "validation")):
        for folder in split_folders(lab, split):
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
            files = manifest.get("files", [])
            shard = folder.parent
            if shard not in versions:
                versions[shard] = dvc_md5(shard)
            inputs.append(
                _dataset_input(
                    f"token_shards/{shard.parent.name}/{shard.name}/{split}",
                    dvc_md5(folder),
                    folder,
                    context,
                    num_tokens=sum(f.get("num_tokens", 0) for f in files),
                    num_documents=sum(f.get("num_documents", 0) for f in files),
                    # The token_shards partition's data version (its dvc.lock hash).
                    token_shards_data_version=versions[shard],
                )
            )
    _client(lab).log_inputs(run_id, datasets=inputs)
    return run_id


def log_report(
    lab: Lab, folder: Path, metrics_by_step: dict[int, dict[str, float]] | None = None
) -> str | None:
    """Attach the model report's files to the training run (``model_report/``) and log its
    per-checkpoint metrics there (``downstream/<task>/acc`` … at each checkpoint's step, but
    for points the run already holds); the run's id.

    Returns None, with a warning, when the training run recorded no MLflow run. A rerun
    replaces the files at the same artifact paths.
    """
    run_id = training_run_id(lab)
    if run_id is None:
        warnings.warn(
            f"{lab.run_dir / _RUN_ID_FILE} does not exist: the model report is not attached "
            "to a training run in MLflow",
            stacklevel=2,
        )
        return None
    client = _client(lab)
    client.log_artifacts(run_id, str(folder), REPORT_ARTIFACTS)
    client.set_tag(run_id, MODEL_REPORT_URL_TAG, stage_page("model_report"))
    for step, metrics in sorted((metrics_by_step or {}).items()):
        _log_new_points(client, run_id, step, metrics)
    return run_id


def log_plot(lab: Lab, run_id: str, path: Path) -> str:
    """Log the PNG ``path`` as an artifact of run ``run_id``; returns its artifact path.

    The path is ``plots/<md5 of the file's bytes>/<file name>``: each version of a plot keeps
    its own address (``links.mlflow_artifact_url(run_id, artifact_path)``), so a link
    recorded with an older materialization still shows the plot it showed then.
    """
    from olmo_assets.lab.hashing import file_md5

    folder = f"{PLOTS_ARTIFACTS}/{file_md5(path)}"
    _client(lab).log_artifact(run_id, str(path), folder)
    return f"{folder}/{path.name}"


def log_corpus_report(lab: Lab, folder: Path, started_ms: int | None = None) -> str:
    """Log the corpus report's files as the artifacts of a run "corpus report"; its id.

    A FINISHED run that logged the same report (the folder's DVC hash) is reused, as
    :func:`log_evaluation` reuses an evaluation run; a different report gets a new run,
    from ``started_ms`` (when the report began) to now.
    """
    from olmo_assets.lab.hashing import dvc_md5

    client = _client(lab)
    experiment = experiment_id(lab, client)
    identity = {KIND_TAG: "corpus_report", REPORT_MD5_TAG: dvc_md5(folder)}
    link = {DAGSTER_URL_TAG: stage_page("corpus_report")}
    existing = _find_run(client, experiment, identity)
    if existing is not None:
        client.set_tag(existing.info.run_id, DAGSTER_URL_TAG, link[DAGSTER_URL_TAG])
        return str(existing.info.run_id)
    run = client.create_run(
        experiment,
        start_time=started_ms,
        run_name="corpus report",
        tags=identity | git_tags() | link,
    )
    run_id = str(run.info.run_id)
    try:
        client.log_artifacts(run_id, str(folder), CORPUS_REPORT_ARTIFACTS)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id
