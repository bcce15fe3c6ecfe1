"""The pipeline, declared once.

Each :class:`Stage` says, in one place, everything the platform needs to know about a step:

* ``run``: the step function (:mod:`olmo_assets.lab.steps`), and ``group``;
* ``writes``: its artifacts — name (the Dagster asset key), folder, description, and the
  checks that re-read the folder once the step has written it;
* ``reads``: the artifacts of earlier stages it reads (the same partition, or every one);
* ``params``: the exact ``params.yaml`` keys it reads, dotted (``sources.{source}`` is the
  source the stage runs for); ``files``: the keys among them whose value is a file the step
  reads (its content counts too); ``code``: the code it runs besides its own step module;
* ``fanout``: once, per source shard, per checkpoint, or per checkpoint and task.

Everything else is derived from ``STAGES``: the Dagster assets, their dependencies,
partitions and code versions (:mod:`olmo_assets.defs`), ``dvc.yaml``
(:mod:`olmo_assets.lab.dvcyaml`, ``olmo lab dvc-yaml``), the stage command's arguments, and
the order ``make demo`` runs in. A stage's *code version* hashes exactly what DVC compares
for it — its parameters' values as ``params.yaml`` writes them, the files they name, its code
— so a change marks the same stages out of date in both tools. Nothing here imports Dagster
or DVC.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import olmo_assets
from olmo_assets.lab.hashing import dvc_md5
from olmo_assets.lab.params import Lab
from olmo_assets.lab.steps import checkpoints, curation, evaluation, reports, tokenization, training
from olmo_assets.lab.steps.results import CheckResult, InputError, StepResult

__all__ = [
    "CODE_ROOT",
    "PARTITION_SEPARATOR",
    "SOURCES_DVC_YAML",
    "STAGES",
    "Artifact",
    "Check",
    "Fanout",
    "Read",
    "Stage",
    "StageRun",
    "artifact_named",
    "code_version",
    "inputs",
    "stage_named",
    "stage_runs",
    "upstream_runs",
]

#: The folder the code runs from: a ``code`` path missing from a lab's repository (a lab
#: folder holding only params.yaml and configs) is hashed here.
CODE_ROOT = Path(olmo_assets.__file__).resolve().parents[1]


#: The pipeline file of the stages that read a source's files, one per shard (generated with
#: the shard plan): DVC names them ``sources/dvc.yaml:<stage>-<source>-<shard>``.
SOURCES_DVC_YAML = "sources/dvc.yaml"

#: Dagster writes a multi-partition key as its dimensions' keys in dimension-name order,
#: joined by this: checkpoint|task ("100|arc_easy").
PARTITION_SEPARATOR = "|"


class Fanout(enum.Enum):
    """How many times a stage runs, and the arguments each run takes."""

    ONCE = ()
    SHARD = ("source", "shard")
    CHECKPOINT = ("step",)
    CHECKPOINT_TASK = ("step", "task")

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.value)


@dataclass(frozen=True)
class Check:
    name: str
    description: str
    run: Callable[..., CheckResult]
    """``run(lab, *arguments)``: re-reads what the stage wrote."""


@dataclass(frozen=True)
class Artifact:
    name: str
    folder: Callable[..., Path]
    """``folder(lab, *arguments)``: where it lives; its content hash is its version."""
    description: str
    checks: tuple[Check, ...] = ()


@dataclass(frozen=True)
class Read:
    artifact: str
    every: bool = False
    """Every partition (source, checkpoint, task) of it, not just the one matching this run."""


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[..., StepResult]
    group: str
    writes: tuple[Artifact, ...]
    reads: tuple[Read, ...] = ()
    params: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    code: tuple[str, ...] = ()
    fanout: Fanout = Fanout.ONCE
    persist: bool = False
    """Kept while the stage reruns (an interrupted training run resumes from it)."""
    launcher: str | None = None
    """The ``params.yaml`` section whose ``launcher`` and ``slurm`` say where the step runs
    (``eval``, ``curation``); None: always here (the train step launches its own job)."""
    reads_files: bool = False
    """Reads the source's own files (``paths``): DVC names them, shard by shard, as the
    stage's external dependencies (``sources/dvc.yaml``); Dagster sees them as an
    observable source asset per source, partitioned like the stage."""

    @property
    def module(self) -> str:
        """The step's own module, a code dependency of the stage."""
        return self.run.__module__.replace(".", "/") + ".py"

    @property
    def code_paths(self) -> tuple[str, ...]:
        return (self.module, *self.code)

    @property
    def checks(self) -> Iterator[tuple[Artifact, Check]]:
        for artifact in self.writes:
            for check in artifact.checks:
                yield artifact, check


def _accounting(run: Callable[..., CheckResult]) -> Check:
    return Check(
        "accounting",
        "Every record read is in the files written: kept, validation, removed, quarantined "
        "(or, before the mix, tagged).",
        run,
    )


def _rows_complete(run: Callable[..., CheckResult]) -> Check:
    return Check("rows_complete", "Every expected result row is there, complete and finite.", run)


CURATION = ("olmo_assets/curation",)
LIBRARY = ("olmo_nn",)

STAGES: tuple[Stage, ...] = (
    Stage(
        "source",
        curation.build_source,
        "curation",
        (
            Artifact(
                "raw_source",
                Lab.raw,
                "One shard of a source as Dolma-format jsonl.gz (built in, or read from the "
                "source's files), with what could not be read quarantined.",
                (
                    Check(
                        "accounting",
                        "Every record read is a document or quarantined, and each file read "
                        "is unchanged since.",
                        curation.raw_accounting,
                    ),
                ),
            ),
        ),
        params=("sources.{source}",),
        code=(
            "olmo_assets/curation/local_sources.py",
            "olmo_assets/curation/external.py",
            "olmo_assets/curation/outputs.py",
        ),
        fanout=Fanout.SHARD,
        reads_files=True,
    ),
    Stage(
        "eval_data",
        curation.build_eval_data,
        "curation",
        (
            Artifact(
                "eval_task_data",
                lambda lab: lab.eval_data,
                "The evaluation tasks' examples as documents: what decontamination removes.",
            ),
        ),
        params=("eval.tasks",),
        code=("olmo_nn/eval", "olmo_assets/curation/outputs.py"),
    ),
    Stage(
        "tag",
        curation.tag_source,
        "curation",
        (
            Artifact(
                "attributes",
                Lab.tagged,
                "The taggers' attributes over one shard of a source (scores; decisions come "
                "in the mix).",
                (_accounting(curation.tag_accounting),),
            ),
        ),
        reads=(Read("raw_source"),),
        params=("sources.{source}", "curation.mix"),
        files=("curation.mix",),
        code=CURATION,
        fanout=Fanout.SHARD,
        launcher="curation",
    ),
    Stage(
        "dedup",
        curation.deduplicate,
        "curation",
        (
            Artifact(
                "deduplicated",
                lambda lab: lab.dedup,
                "URL, exact, paragraph and fuzzy duplicates across sources; contamination.",
                (_accounting(curation.dedup_accounting),),
            ),
        ),
        reads=(Read("raw_source", every=True), Read("eval_task_data")),
        # Every source's kind decides its dedup config; DVC can name that only as the whole
        # section, so both tools track `sources` here.
        params=("sources", "curation.mix"),
        files=("curation.mix",),
        code=CURATION,
    ),
    Stage(
        "mix",
        curation.mix,
        "curation",
        (
            Artifact(
                "curated_corpus",
                lambda lab: lab.curated,
                "The mix: decisions, span replacement and sampling; the kept documents.",
                (
                    _accounting(curation.mix_accounting),
                    Check(
                        "no_contamination_left",
                        "No kept document is flagged as contaminated by evaluation data.",
                        curation.no_contamination_left,
                    ),
                ),
            ),
            Artifact(
                "validation_splits",
                lambda lab: lab.curated / "validation",
                "The held-out documents per source (perplexity), written by the mix.",
            ),
        ),
        reads=(
            Read("raw_source", every=True),
            Read("attributes", every=True),
            Read("deduplicated"),
        ),
        params=("sources", "curation.mix", "curation.validation_fraction"),
        files=("curation.mix",),
        code=CURATION,
    ),
    Stage(
        "tokenizer",
        tokenization.save_tokenizer,
        "tokenization",
        (
            Artifact(
                "tokenizer",
                lambda lab: lab.tokenizer_dir,
                "The tokenizer the shards are made with (params.yaml `tokenizer`).",
            ),
        ),
        params=("tokenizer",),
        code=("olmo_nn/tokenizer",),
    ),
    Stage(
        "tokenize",
        tokenization.tokenize,
        "tokenization",
        (
            Artifact(
                "token_shards",
                Lab.token_shards,
                "OLMo token shards of one source shard: its kept documents (train/) and its "
                "validation split.",
                (
                    Check(
                        "shards_readable",
                        "Every shard file re-read matches its manifest (size, sha256, ids in "
                        "the vocabulary) and the index tiles it, each document ending in EOS.",
                        tokenization.shards_readable,
                    ),
                ),
            ),
        ),
        # The whole mix, in both tools: a new mix reruns every shard's tokenization (the
        # shard's manifest says which files are its share).
        reads=(Read("tokenizer"), Read("curated_corpus"), Read("validation_splits")),
        code=("olmo_nn/data", "olmo_nn/tokenizer"),
        fanout=Fanout.SHARD,
        launcher="curation",
    ),
    Stage(
        "corpus_report",
        reports.corpus_report,
        "curation",
        (
            Artifact(
                "corpus_report",
                lambda lab: lab.corpus_report,
                "The curated corpus, WIMBD-style: tables and plots.",
            ),
        ),
        reads=(Read("curated_corpus"),),
        code=("olmo_assets/curation/report.py",),
    ),
    Stage(
        "train",
        training.train,
        "training",
        (
            Artifact(
                "training_run",
                lambda lab: lab.run_dir,
                "The training run under torchrun: metrics, checkpoints, loss curve, MLflow run.",
                (
                    Check(
                        "losses_finite",
                        "metrics.jsonl holds a finite loss for every step.",
                        training.losses_finite,
                    ),
                ),
            ),
            Artifact(
                "data_order",
                lambda lab: lab.run_dir / "data_order",
                "The order the run reads the token shards in (the permutation per epoch).",
            ),
        ),
        reads=(Read("token_shards", every=True),),
        params=("train",),
        files=("train.config",),
        code=LIBRARY,
        persist=True,
    ),
    Stage(
        "checkpoint",
        checkpoints.record_checkpoint,
        "training",
        (
            Artifact(
                "checkpoint",
                Lab.checkpoint_record,
                "One kept checkpoint, verified loadable: content hash, tokens seen, parameters; "
                "the tokens per source it saw and the documents of its last batches.",
            ),
        ),
        # The shards and the tokenizer: its last batches' documents, decoded.
        reads=(Read("training_run"), Read("token_shards", every=True), Read("tokenizer")),
        code=(
            *LIBRARY,
            "olmo_assets/lab/samples.py",
            "olmo_assets/lab/lineage.py",
            "olmo_assets/lab/query.py",
        ),
        fanout=Fanout.CHECKPOINT,
    ),
    Stage(
        "downstream",
        evaluation.evaluate_downstream,
        "evaluation",
        (
            Artifact(
                "downstream_eval",
                Lab.downstream,
                "One downstream task on one checkpoint (rank classification).",
                (_rows_complete(evaluation.downstream_rows_complete),),
            ),
        ),
        reads=(Read("checkpoint"),),
        params=("eval.limit",),
        code=LIBRARY,
        fanout=Fanout.CHECKPOINT_TASK,
        launcher="eval",
    ),
    Stage(
        "perplexity",
        evaluation.evaluate_perplexity,
        "evaluation",
        (
            Artifact(
                "perplexity_eval",
                Lab.perplexity,
                "Paloma-style perplexity and bits per byte per source on the validation splits.",
                (_rows_complete(evaluation.perplexity_rows_complete),),
            ),
        ),
        reads=(Read("checkpoint"), Read("validation_splits")),
        params=("eval.perplexity_documents",),
        code=LIBRARY,
        fanout=Fanout.CHECKPOINT,
        launcher="eval",
    ),
    Stage(
        "model_report",
        reports.model_report,
        "evaluation",
        (
            Artifact(
                "model_report",
                lambda lab: lab.model_report,
                "Metrics by step, the evaluation table and plots over every checkpoint.",
                (_rows_complete(reports.model_report_complete),),
            ),
        ),
        reads=(
            Read("training_run"),
            Read("downstream_eval", every=True),
            Read("perplexity_eval", every=True),
        ),
        params=("eval.checkpoints", "eval.tasks"),
        # olmo_nn/eval: each task's main metric, MMLU's averages and the suites' scores.
        code=(
            "olmo_assets/lab/report.py",
            "olmo_nn/eval",
            "olmo_nn/train/callbacks/metrics_file.py",
        ),
    ),
)

_STAGES = {stage.name: stage for stage in STAGES}
_WRITERS = {artifact.name: (stage, artifact) for stage in STAGES for artifact in stage.writes}


def stage_named(name: str) -> Stage:
    if name not in _STAGES:
        raise InputError(f"unknown stage {name!r}; stages are {', '.join(_STAGES)}")
    return _STAGES[name]


def artifact_named(name: str) -> tuple[Stage, Artifact]:
    """The artifact called ``name`` and the stage that writes it."""
    return _WRITERS[name]


def _validate() -> None:
    """The declaration's own rules, checked on import: names are unique, a stage reads only
    earlier stages' artifacts (so ``STAGES`` is in dependency order), a read's partitions
    can be matched, and only per-source stages name a per-run parameter."""
    seen: set[str] = set()
    if len(_WRITERS) != sum(len(s.writes) for s in STAGES):
        raise AssertionError("two stages write an artifact of the same name")
    for stage in STAGES:
        for read in stage.reads:
            if read.artifact not in seen:
                raise AssertionError(f"{stage.name} reads {read.artifact}, not written before it")
            upstream = _WRITERS[read.artifact][0].fanout
            if not read.every and not set(upstream.keys) <= set(stage.fanout.keys):
                raise AssertionError(f"{stage.name} reads one {read.artifact}: which one?")
        if stage.fanout is not Fanout.SHARD and any("{" in p for p in stage.params):
            raise AssertionError(f"{stage.name}: only per-shard stages template parameters")
        if stage.reads_files and stage.fanout is not Fanout.SHARD:
            raise AssertionError(f"{stage.name}: only a per-shard stage reads a source's files")
        for key in stage.files:
            if not any(key == p or key.startswith(p + ".") for p in stage.params):
                raise AssertionError(f"{stage.name}: file parameter {key} is not a parameter")
        seen.update(artifact.name for artifact in stage.writes)


_validate()


# -- one run of a stage ----------------------------------------------------------------------


@dataclass(frozen=True)
class StageRun:
    """A stage with its arguments: ``tag`` for ``code``, ``downstream`` for ``(100, "copa")``."""

    stage: Stage
    arguments: tuple[str, ...] = ()

    @property
    def keys(self) -> dict[str, str]:
        return dict(zip(self.stage.fanout.keys, self.arguments, strict=True))

    @property
    def dvc_name(self) -> str:
        """The stage's name for DVC: ``foreach``/``matrix`` add ``@<key>`` in ``dvc.yaml``
        (``tag@web-00003``); a stage that reads a source's files is written out per shard in
        ``sources/dvc.yaml`` (``sources/dvc.yaml:source-web-00003``)."""
        if not self.arguments:
            return self.stage.name
        name = (
            f"{self.stage.name}{'-' if self.stage.reads_files else '@'}{'-'.join(self.arguments)}"
        )
        return f"{SOURCES_DVC_YAML}:{name}" if self.stage.reads_files else name

    @property
    def partition(self) -> str | None:
        """Its Dagster partition: the shard, the checkpoint, or ``<checkpoint>|<task>``
        (Dagster joins a multi-partition's keys with ``|`` in dimension-name order)."""
        if self.stage.fanout is Fanout.SHARD:
            return self.keys["shard"]
        if self.stage.fanout is Fanout.ONCE:
            return None
        return PARTITION_SEPARATOR.join(self.arguments)

    def asset_path(self, artifact: Artifact) -> tuple[str, ...]:
        """An artifact's Dagster asset key: ``raw_source/code`` per source (its shards are
        partitions), else its name."""
        if self.stage.fanout is Fanout.SHARD:
            return (artifact.name, self.keys["source"])
        return (artifact.name,)

    @property
    def command(self) -> list[str]:
        """The command both DVC and Dagster run (``python`` from PATH, as DVC does)."""
        return ["python", "-m", "olmo_assets.defs.stage", self.stage.name, *self.arguments]

    def folder(self, lab: Lab, artifact: Artifact) -> Path:
        return artifact.folder(lab, *self.typed_arguments)

    def params(self) -> tuple[str, ...]:
        """The stage's parameter keys for this run (``sources.{source}`` filled in)."""
        return tuple(key.format(**self.keys) for key in self.stage.params)

    def files(self) -> tuple[str, ...]:
        return tuple(key.format(**self.keys) for key in self.stage.files)

    @property
    def typed_arguments(self) -> list[Any]:
        """The arguments as the step takes them (a checkpoint step is an ``int``)."""
        return [int(v) if k == "step" else v for k, v in self.keys.items()]

    def execute(self, lab: Lab) -> tuple[StepResult, list[tuple[Artifact, Check, CheckResult]]]:
        """Run the step, then every check of what it wrote: here, or as a Slurm job where the
        stage's launcher setting says so (:mod:`olmo_assets.lab.jobs`)."""
        section = self.stage.launcher
        if section is not None and lab.param(f"{section}.launcher") == "slurm":
            from olmo_assets.lab.jobs import execute_on_slurm

            return execute_on_slurm(lab, self, getattr(lab.params, section).slurm)
        return self.execute_here(lab)

    def execute_here(
        self, lab: Lab
    ) -> tuple[StepResult, list[tuple[Artifact, Check, CheckResult]]]:
        """Run the step, then every check of what it wrote, in this process."""
        result = self.stage.run(lab, *self.typed_arguments)
        outcomes = [
            (artifact, check, check.run(lab, *self.typed_arguments))
            for artifact, check in self.stage.checks
        ]
        return result, outcomes


def stage_runs(lab: Lab, stage: Stage) -> list[StageRun]:
    """Every run of ``stage`` that ``params.yaml`` asks for, in order."""
    params = lab.params
    values: dict[Fanout, list[tuple[str, ...]]] = {
        Fanout.ONCE: [()],
        Fanout.SHARD: [
            (name, shard) for name in params.sources for shard in lab.source_shards(name)
        ],
        Fanout.CHECKPOINT: [(str(step),) for step in params.eval.checkpoints],
        Fanout.CHECKPOINT_TASK: [
            (str(step), task) for step in params.eval.checkpoints for task in params.eval.tasks
        ],
    }
    return [StageRun(stage, arguments) for arguments in values[stage.fanout]]


def inputs(lab: Lab, run: StageRun) -> list[tuple[StageRun, Artifact]]:
    """What ``run`` reads: each upstream run with the artifact of it that is read, in the
    order of the stage's reads (every source, checkpoint or task of an ``every`` read)."""
    found: list[tuple[StageRun, Artifact]] = []
    for read in run.stage.reads:
        upstream, artifact = artifact_named(read.artifact)
        for candidate in stage_runs(lab, upstream):
            if read.every or all(run.keys[k] == v for k, v in candidate.keys.items()):
                found.append((candidate, artifact))
    return found


def upstream_runs(lab: Lab, run: StageRun) -> list[StageRun]:
    """The runs whose artifacts ``run`` reads (what must be done before it)."""
    return list(dict.fromkeys(upstream for upstream, _ in inputs(lab, run)))


def parse_run(lab: Lab, name: str, arguments: list[str]) -> StageRun:
    """A run from a command line, checked: the argument count, a source params.yaml names."""
    stage = stage_named(name)
    keys = stage.fanout.keys
    if len(arguments) != len(keys):
        raise InputError(
            f"stage {name!r} takes {len(keys)} argument(s) ({', '.join(keys) or 'none'}), "
            f"got {arguments}"
        )
    run = StageRun(stage, tuple(arguments))
    source = run.keys.get("source")
    if source is not None and source not in lab.params.sources:
        raise InputError(f"unknown source {source!r}; params.yaml names {', '.join(lab.params.sources)}")  # fmt: skip
    shard = run.keys.get("shard")
    if source is not None and shard not in lab.source_shards(source):
        raise InputError(
            f"source {source!r} has no shard {shard!r} (shards: {', '.join(lab.source_shards(source))}); "
            "`olmo lab shards` plans new files into new shards"
        )
    step = run.keys.get("step")
    if step is not None and not step.isdigit():
        raise InputError(f"checkpoint step {step!r} is not a whole number")
    return run


# -- versions --------------------------------------------------------------------------------


def _canonical(value: Any) -> Any:
    """A parameter value as DVC compares it: ``2.0`` equals ``2``."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def code_path(lab: Lab, path: str) -> Path:
    """A code dependency: in the lab's repository when it holds the code (what DVC hashes),
    else where the code runs from."""
    inside = lab.repo / path
    return inside if inside.exists() else CODE_ROOT / path


def code_version(lab: Lab, run: StageRun) -> str:
    """A short hash of what DVC compares for the stage besides its inputs: its parameters'
    values, the files they name and its code. Equal runs of a stage share it (the code
    version of a partitioned Dagster asset), except per source, where the source's own
    parameters enter."""
    files = {}
    for key in run.files():
        path = lab.repo / str(lab.param(key))
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (params.yaml {key})")
        files[key] = dvc_md5(path)
    identity = {
        "command": run.command[2:4],
        "params": {key: _canonical(lab.param(key)) for key in run.params()},
        "files": files,
        "code": {path: dvc_md5(code_path(lab, path)) for path in run.stage.code_paths},
    }
    text = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
