"""What each pipeline step produces, as Dagster sees it: asset keys, folders, partitions, checks.

The one table both sides of the platform read: the asset definitions
(:mod:`olmo_assets.defs.assets`) build their specs from it, and the stage command
(:mod:`olmo_assets.defs.stage`) uses it to name the assets, partitions and checks it records,
so a materialization from the UI and one from ``dvc repro`` land on the same asset and
partition. Nothing here imports Dagster.

An artifact's *code version* hashes the ``params.yaml`` sections its step reads (and the
config files those sections name), so changing a parameter marks exactly the artifacts that
read it stale; its *data version* is DVC's content hash of its folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from olmo_assets.lab.hashing import dvc_md5
from olmo_assets.lab.params import Lab
from olmo_assets.lab.steps import STEPS

__all__ = [
    "ARTIFACTS",
    "CHECKPOINT_DIMENSION",
    "MULTI_PARTITION_SEPARATOR",
    "TASK_DIMENSION",
    "Artifact",
    "Partitioning",
    "artifact",
    "artifacts_of",
    "code_version",
    "data_version",
    "partition_key",
    "step_arguments",
]

CHECKPOINT_DIMENSION = "checkpoint"
TASK_DIMENSION = "task"
# Dagster writes a multi-partition key as its dimensions' keys, in dimension-name order,
# joined by "|": checkpoint|task ("80|arc_easy").
MULTI_PARTITION_SEPARATOR = "|"


class Partitioning:
    """How an artifact is partitioned; each maps to its step's arguments one to one."""

    SOURCE = "source"
    CHECKPOINT = "checkpoint"
    CHECKPOINT_TASK = "checkpoint_task"


@dataclass(frozen=True)
class Artifact:
    key: str
    """The asset key."""
    step: str
    """The step of :data:`olmo_assets.lab.steps.STEPS` that writes it."""
    folder: Callable[..., Path]
    """Where it lives: ``folder(lab, *step_arguments)``; its DVC hash is the data version."""
    group: str
    description: str
    deps: tuple[str, ...] = ()
    """Asset keys it reads (see :mod:`olmo_assets.defs.assets` for the partition mappings)."""
    partitioning: str | None = None
    checks: tuple[str, ...] = ()
    """Names of the step's checks reported on this asset (the step returns them)."""


ARTIFACTS: tuple[Artifact, ...] = (
    Artifact(
        "raw_source",
        "source",
        Lab.raw,
        "curation",
        "One raw source as Dolma-format jsonl.gz, assembled from what is on this machine.",
        partitioning=Partitioning.SOURCE,
    ),
    Artifact(
        "eval_task_data",
        "eval_data",
        lambda lab: lab.eval_data,
        "curation",
        "The evaluation tasks' examples as documents: what decontamination removes.",
    ),
    Artifact(
        "attributes",
        "tag",
        Lab.tagged,
        "curation",
        "The taggers' attributes over one source (scores only; decisions come in the mix).",
        deps=("raw_source",),
        partitioning=Partitioning.SOURCE,
        checks=("accounting",),
    ),
    Artifact(
        "deduplicated",
        "dedup",
        lambda lab: lab.dedup,
        "curation",
        "URL, exact, paragraph and fuzzy duplicates across sources, and contamination.",
        deps=("raw_source", "eval_task_data"),
    ),
    Artifact(
        "curated_corpus",
        "mix",
        lambda lab: lab.curated,
        "curation",
        "The mix: decisions, span replacement and sampling over the attributes; kept documents.",
        deps=("raw_source", "attributes", "deduplicated"),
        checks=("accounting", "no_contamination_left"),
    ),
    Artifact(
        "validation_splits",
        "mix",
        lambda lab: lab.curated / "validation",
        "curation",
        "The held-out documents per source (perplexity evaluation), written by the mix.",
        deps=("raw_source", "attributes", "deduplicated"),
    ),
    Artifact(
        "tokenizer",
        "tokenizer",
        lambda lab: lab.tokenizer_dir,
        "curation",
        "The tokenizer the shards are made with (params.yaml `tokenizer`).",
    ),
    Artifact(
        "token_shards",
        "tokenize",
        lambda lab: lab.shards,
        "curation",
        "OLMo token shards of the kept documents (train/) and the validation splits.",
        deps=("tokenizer", "curated_corpus", "validation_splits"),
        checks=("shards_readable",),
    ),
    Artifact(
        "corpus_report",
        "corpus_report",
        lambda lab: lab.corpus_report,
        "curation",
        "The curated corpus, WIMBD-style: tables and plots.",
        deps=("curated_corpus",),
    ),
    Artifact(
        "training_run",
        "train",
        lambda lab: lab.run_dir,
        "training",
        "The training run under torchrun: metrics, checkpoints, loss curve, MLflow run.",
        deps=("token_shards",),
        checks=("losses_finite",),
    ),
    Artifact(
        "data_order",
        "train",
        lambda lab: lab.run_dir / "data_order",
        "training",
        "The order the run reads the token shards in (the permutation per epoch).",
        deps=("token_shards",),
    ),
    Artifact(
        "checkpoint",
        "checkpoint",
        lambda lab, step: lab.checkpoint_record(int(step)),
        "training",
        "One kept checkpoint, verified loadable: its content hash, tokens seen, parameters.",
        deps=("training_run",),
        partitioning=Partitioning.CHECKPOINT,
    ),
    Artifact(
        "downstream_eval",
        "downstream",
        lambda lab, step, task: lab.downstream(int(step), task),
        "evaluation",
        "One downstream task on one checkpoint (rank classification, OLMo's normalization).",
        deps=("checkpoint",),
        partitioning=Partitioning.CHECKPOINT_TASK,
        checks=("rows_complete",),
    ),
    Artifact(
        "perplexity_eval",
        "perplexity",
        lambda lab, step: lab.perplexity(int(step)),
        "evaluation",
        "Paloma-style perplexity and bits per byte per source on the validation splits.",
        deps=("checkpoint", "validation_splits"),
        partitioning=Partitioning.CHECKPOINT,
        checks=("rows_complete",),
    ),
    Artifact(
        "model_report",
        "model_report",
        lambda lab: lab.model_report,
        "evaluation",
        "Metrics by step, the evaluation table and plots over every checkpoint.",
        deps=("training_run", "downstream_eval", "perplexity_eval"),
        checks=("rows_complete",),
    ),
)

_BY_KEY = {artifact.key: artifact for artifact in ARTIFACTS}


def artifacts_of(step: str) -> list[Artifact]:
    """The artifacts ``step`` writes, its primary one (which carries the checks) first."""
    found = [artifact for artifact in ARTIFACTS if artifact.step == step]
    if not found:
        steps = sorted({artifact.step for artifact in ARTIFACTS})
        raise KeyError(f"no asset is written by step {step!r}; steps are {', '.join(steps)}")
    return found


def partition_key(artifact: Artifact, arguments: tuple[str, ...]) -> str | None:
    """The partition a step run with ``arguments`` writes (``None`` if unpartitioned)."""
    if artifact.partitioning is None:
        return None
    return MULTI_PARTITION_SEPARATOR.join(str(a) for a in arguments)


def step_arguments(artifact: Artifact, key: str | None) -> tuple[str, ...]:
    """The inverse of :func:`partition_key`: a partition's step arguments."""
    if artifact.partitioning is None:
        return ()
    if key is None:
        raise ValueError(f"asset {artifact.key!r} is partitioned: give a partition key")
    if artifact.partitioning == Partitioning.CHECKPOINT_TASK:
        checkpoint, task = key.split(MULTI_PARTITION_SEPARATOR)
        return (checkpoint, task)
    return (key,)


def _config_files(lab: Lab, step: str, sections: tuple[str, ...]) -> list[Path]:
    """Files whose contents define a step's output beyond params.yaml's values."""
    files = []
    if "curation" in sections and step in ("tag", "dedup", "mix"):
        files.append(lab.repo / lab.params.curation.mix)
    if "train" in sections:
        files.append(lab.repo / lab.params.train.config)
    return files


def code_version(lab: Lab, step: str) -> str:
    """A short hash of what a step's output depends on besides its inputs: the params.yaml
    sections it reads (``Step.params``) and the config files they name."""
    sections = STEPS[step].params if step in STEPS else ()
    files = {}
    for path in _config_files(lab, step, sections):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (named in {lab.repo / 'params.yaml'})")
        name = path.relative_to(lab.repo).as_posix() if path.is_relative_to(lab.repo) else str(path)
        files[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    identity = {
        "step": step,
        "params": {name: lab.params.section(name) for name in sections},
        "files": files,
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def data_version(folder: Path) -> str:
    """DVC's content hash of an artifact's folder (what ``dvc.lock`` records for it)."""
    return dvc_md5(folder)


def artifact(key: str) -> Artifact:
    return _BY_KEY[key]
