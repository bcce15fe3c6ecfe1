"""``params.yaml``: the parameters that define the lab's artifacts, and where they live.

Each stage of the pipeline (:mod:`olmo_assets.lab.pipeline`) names the exact keys it reads;
DVC tracks those keys per stage (``dvc.yaml``) and Dagster hashes the same values into the
stage's code version, so a change marks the same artifacts out of date in both tools.
:meth:`Lab.param` reads a key as the YAML file has it (what DVC compares), not as the typed
config fills it in with defaults.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from olmo_nn.config import Config, ConfigError
from olmo_nn.paths import safe_name

if TYPE_CHECKING:
    from olmo_assets.lab.shards import ShardPlan

__all__ = [
    "SHARDS_FILE",
    "SOURCE_FORMATS",
    "SOURCE_KINDS",
    "CurationParams",
    "EvalParams",
    "KubernetesParams",
    "Lab",
    "LabParams",
    "SourceParams",
    "TrainParams",
    "find_repo_root",
]

SOURCE_KINDS = ("code", "prose", "markdown", "multilingual")
"""The built-in sources, assembled from what is on this machine (``local_sources``)."""
SOURCE_FORMATS = ("dolma", "parquet", "html", "warc")
"""What a source's files hold (:mod:`olmo_assets.curation.external`)."""
SHARDS_FILE = "sources/shards.yaml"
"""The shard plan, beside ``params.yaml`` (``olmo lab shards`` writes it; committed)."""


def check_name(kind: str, name: object) -> str:
    """``name`` if it is one safe path part (``olmo_nn.paths.safe_name``), else ConfigError:
    source and task names become folders, DVC stage names and Dagster asset keys."""
    try:
        return safe_name(kind, name, names="a folder, a DVC stage and a Dagster asset")
    except ValueError as error:
        raise ConfigError(str(error)) from None


@dataclass
class SourceParams(Config):
    """One source: a built-in one (``kind`` alone), or files anywhere fsspec reaches
    (``paths``), grouped into shards of about ``shard_mb`` (one partition each)."""

    kind: str | None = None
    """Without ``paths``: the built-in source that builds it (code | prose | markdown |
    multilingual). With ``paths``: ``code`` curates the files as code (code taggers, no
    decontamination), anything else or nothing as text."""
    paths: list[str] = field(default_factory=list)
    """Files, folders, globs or fsspec URLs (``s3://bucket/cc/*.jsonl.gz``, ``file://``,
    ``gs://``). Credentials come from those libraries' usual environment and config."""
    format: str = "dolma"
    """What the files hold: dolma (JSON lines, plain, .gz or .zst) | parquet | html (one page
    per file) | warc (the HTML responses of a crawl)."""
    shard_mb: float = 256.0
    """Files are grouped into shards of about this many MB as stored (compressed): one
    partition each."""
    id_field: str = "id"
    """The record's id column or key (parquet, dolma)."""
    text_field: str = "text"
    """The record's text column or key (parquet, dolma)."""
    url_field: str | None = None
    """A column or key holding the document's URL (into ``metadata.url``: URL dedup)."""
    metadata_fields: list[str] = field(default_factory=list)
    """Further columns or keys copied into the document's ``metadata``."""
    max_mb: float | None = None
    """For the built-in ``code``: stop after this many MB of standard-library source."""

    def __post_init__(self) -> None:
        if not self.paths:
            if self.kind not in SOURCE_KINDS:
                raise ConfigError(
                    f"kind={self.kind!r}: a source is built in (kind: one of "
                    f"{', '.join(SOURCE_KINDS)}) or reads files (paths: [...], format: ...)"
                )
            return
        if self.kind not in (None, "code"):
            raise ConfigError(
                f"kind={self.kind!r} with paths: a source read from files is curated as text, "
                "or as code with kind: code (the other kinds name built-in sources)"
            )
        if isinstance(self.paths, str):
            raise ConfigError(f"paths={self.paths!r} must be a list: paths: [{self.paths!r}]")
        if self.format not in SOURCE_FORMATS:
            raise ConfigError(
                f"format={self.format!r}, expected one of {', '.join(SOURCE_FORMATS)}"
            )
        if not self.shard_mb > 0:
            raise ConfigError(f"shard_mb={self.shard_mb} must be positive")

    @property
    def built_in(self) -> bool:
        return not self.paths

    @property
    def code(self) -> bool:
        """Curated as code (code taggers, exempt from decontamination)."""
        return self.kind == "code"


#: Where a stage's work runs (``train.launcher``, ``eval.launcher``, ``curation.launcher``).
LAUNCHERS = ("local", "slurm")


def _check_launcher(section: str, launcher: str) -> None:
    if launcher not in LAUNCHERS:
        raise ConfigError(
            f"{section}.launcher={launcher!r}, expected one of {', '.join(LAUNCHERS)}"
        )


@dataclass
class SlurmJobParams(Config):
    """A step's Slurm job (``eval.launcher`` or ``curation.launcher: slurm``): one task on
    one node, submitted and followed by the stage command (:mod:`olmo_assets.lab.jobs`).
    The repository, its ``lab/`` folder and the lab's Python must be on a filesystem every
    node sees."""

    gpus_per_node: int = 0
    """``--gpus-per-node`` (0: none asked for, as on a CPU cluster)."""
    cpus_per_node: int | None = None
    """``--cpus-per-task`` of the one task per node."""
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    """``--time``: ``HH:MM:SS`` or ``D-HH:MM:SS``."""
    sbatch: list[str] = field(default_factory=list)
    """Further ``#SBATCH`` lines (``--constraint=h100``, ``--exclusive``)."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run first on the job's node (``module load cuda``, ``source venv/bin/activate``)."""
    folder: str = "lab/slurm"
    """Where the job scripts and their output files go (relative to the repository); every
    node must see it."""

    def __post_init__(self) -> None:
        if self.gpus_per_node < 0:
            raise ConfigError(
                f"gpus_per_node={self.gpus_per_node} (train.slurm, eval.slurm or "
                "curation.slurm) must be >= 0"
            )


@dataclass
class SlurmParams(SlurmJobParams):
    """A training job on a Slurm cluster (``train.launcher: slurm``): one ``torchrun`` per
    node, ``train.nproc`` processes each (:mod:`olmo_assets.lab.slurm`). The repository,
    its ``lab/`` folder and the lab's Python must be on a filesystem every node sees."""

    nodes: int = 1
    rdzv_port: int = 29500
    """The port of the c10d rendezvous on the first node."""
    signal_seconds: int = 300
    """How long before the time limit Slurm warns the job (``--signal=B:USR1@N``): the trainer
    then saves a checkpoint and stops, and the job requeues itself and resumes from it. Slurm
    sends the warning up to a minute late, and the trainer looks for the request every
    ``log_interval`` steps: leave time for that many steps and a save."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.signal_seconds < 0:
            raise ConfigError(f"train.slurm.signal_seconds={self.signal_seconds} must be >= 0")
        if self.nodes < 1:
            raise ConfigError(f"train.slurm.nodes={self.nodes} must be at least 1")


@dataclass
class CurationParams(Config):
    mix: str = "configs/curation/dolma_v1_5.yaml"
    """The curation config (taggers, dedup, rules); its sources are replaced by ``sources``."""
    validation_fraction: float = 0.05
    """Held out per non-code source as its validation split."""
    launcher: str = "local"
    """Where each source shard's tagging and tokenization run: ``local`` (here) or ``slurm``
    (a job per shard, ``curation.slurm``)."""
    slurm: SlurmJobParams = field(default_factory=SlurmJobParams)

    def __post_init__(self) -> None:
        _check_launcher("curation", self.launcher)


#: A Kubernetes object's name that is also a DNS label (RFC 1035): a Service's name must be.
_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


@dataclass
class KubernetesParams(Config):
    """The training job as Kubernetes objects, rendered by ``olmo lab kubernetes``
    (:mod:`olmo_assets.lab.kubernetes`) for a user to apply; the lab never applies them.

    Only what is Kubernetes' own lives here. The job's shape is declared once, for every
    launcher, where the Slurm launcher already reads it: ``train.slurm.nodes`` (one pod per
    node), ``train.slurm.gpus_per_node``, ``train.slurm.cpus_per_node``, and ``train.nproc``
    (processes per node)."""

    image: str | None = None
    """The container image, with the lab installed (the same commit as the repository);
    required to render."""
    claim: str | None = None
    """The PersistentVolumeClaim holding the repository with its ``lab/`` folder, mounted by
    every pod (ReadWriteMany); required to render."""
    sub_path: str | None = None
    """The repository's folder inside the claim's volume (none: the volume's root)."""
    mount_path: str | None = None
    """Where the repository is in the pod; none: at the same path as on this machine."""
    name: str = "olmo-train"
    """The Job's name, and its headless Service's: pod 0 is ``<name>-0.<name>``."""
    namespace: str | None = None
    """None: the namespace ``kubectl`` applies to."""
    service_account: str | None = None
    """The pods' service account (none: the namespace's ``default``)."""
    gpu_resource: str = "nvidia.com/gpu"
    """The extended resource a GPU is (``amd.com/gpu`` on AMD's device plugin)."""
    memory: str | None = None
    """Memory per pod, requested and limited (``1600Gi``)."""
    shared_memory: str | None = None
    """Size limit of ``/dev/shm`` (memory-backed; NCCL and data loaders use it); none: up to
    the pod's memory."""
    python: str = "python"
    """The lab's Python in the image (it runs ``-m torch.distributed.run``)."""
    node_selector: dict[str, str] = field(default_factory=dict)
    """Labels a node must have (``nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3``)."""
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    """Pod tolerations, as Kubernetes writes them (``{key: nvidia.com/gpu, operator: Exists,
    effect: NoSchedule}``)."""
    env: dict[str, str] = field(default_factory=dict)
    """Further environment variables of the trainer (``NCCL_IB_HCA: mlx5``)."""

    def __post_init__(self) -> None:
        # The pods' host names are <name>-<index>: keep room for the index in 63 characters.
        if not _DNS_LABEL.fullmatch(self.name) or len(self.name) > 56:
            raise ConfigError(
                f"train.kubernetes.name={self.name!r} must be a DNS label of at most 56 "
                "characters: lowercase letters, digits and '-', starting with a letter"
            )


@dataclass
class TrainParams(Config):
    config: str = "configs/tiny.yaml"
    max_steps: int = 300
    checkpoint_interval: int = 100
    """An unsharded checkpoint is kept at every multiple of this."""
    global_batch_size: int = 8
    micro_batch_size: int = 8
    nproc: int = 1
    """Processes (``torchrun --nproc-per-node``; per node under Slurm)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Further ``key=value`` overrides of the training config (``scheduler.warmup_steps``)."""
    launcher: str = "local"
    """``local``: ``torchrun --standalone`` on this machine; ``slurm``: a batch job (``slurm``)."""
    slurm: SlurmParams = field(default_factory=SlurmParams)
    kubernetes: KubernetesParams = field(default_factory=KubernetesParams)
    """The Job a Kubernetes user applies (``olmo lab kubernetes``); no launcher runs it."""

    def __post_init__(self) -> None:
        _check_launcher("train", self.launcher)


@dataclass
class EvalParams(Config):
    checkpoints: list[int] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    limit: int = 40
    perplexity_documents: int = 100
    """Validation documents per source scored for perplexity."""
    continuous: bool = False
    """Dagster: evaluate every checkpoint the training run keeps, as it appears (the
    ``new_checkpoints`` sensor registers it as a partition and launches its evaluations),
    instead of ``checkpoints``; the model report covers the checkpoints evaluated so far.
    ``dvc repro`` evaluates ``checkpoints`` either way."""
    launcher: str = "local"
    """Where each evaluation (checkpoint × task, checkpoint's perplexity) runs: ``local``
    (here) or ``slurm`` (a job each, ``eval.slurm``)."""
    slurm: SlurmJobParams = field(default_factory=SlurmJobParams)

    def __post_init__(self) -> None:
        _check_launcher("eval", self.launcher)


def _check_task(key: str) -> None:
    """Each of ``eval.tasks`` is one task's partition key (a folder, a DVC stage): a format
    is spelled ``arc_easy-mc`` (``olmo_nn.eval.formats.partition_key``), and dvc.yaml's
    matrix reads the list as written, so a suite (``olmes``) must be spelled out."""
    from olmo_nn.eval.formats import FORMAT_SEPARATOR, partition_key, task_of_partition
    from olmo_nn.eval.generative import generative_spec
    from olmo_nn.eval.suites import expand_suites, is_suite
    from olmo_nn.eval.tasks import get_task_spec

    if isinstance(key, str) and FORMAT_SEPARATOR in key:
        try:
            fix = f"write {partition_key(key)}"
        except ValueError as error:  # an unknown format: its message says which exist
            fix = str(error)
        raise ConfigError(
            f"params: eval.tasks has {key!r}: a partition key cannot hold "
            f"{FORMAT_SEPARATOR!r}; {fix}"
        )
    check_name("eval.tasks: task", key)
    task = task_of_partition(key)
    if is_suite(task):
        keys = [partition_key(name) for name in expand_suites(task)]
        raise ConfigError(
            f"params: eval.tasks has the suite {key!r}; each entry is one task (a partition "
            f"and a DVC stage), so list its tasks instead: [{', '.join(keys)}]"
        )
    try:
        if generative_spec(task) is None:
            get_task_spec(task)
    except ValueError as error:
        raise ConfigError(f"params: eval.tasks has {key!r}: {error}") from None


@dataclass
class LabParams(Config):
    sources: dict[str, SourceParams] = field(default_factory=dict)
    curation: CurationParams = field(default_factory=CurationParams)
    tokenizer: str = "olmo"
    train: TrainParams = field(default_factory=TrainParams)
    eval: EvalParams = field(default_factory=EvalParams)
    workers: int = 2
    """Processes for curation and tokenization. No stage tracks it: every artifact is the
    same whatever its value (the curation and tokenization tests check this)."""
    storage: str | None = None
    """An object-store URL (``s3://bucket/lab``) that also receives every stage's artifacts
    once its checks pass (:mod:`olmo_assets.lab.storage`); none by default. No stage tracks
    it: where copies go does not change what they are."""

    def __post_init__(self) -> None:
        for task in self.eval.tasks:
            _check_task(task)
        for step in self.eval.checkpoints:
            if step % self.train.checkpoint_interval or not 0 < step <= self.train.max_steps:
                raise ConfigError(
                    f"params: eval.checkpoints has {step}, which is not a multiple of "
                    f"train.checkpoint_interval={self.train.checkpoint_interval} up to "
                    f"train.max_steps={self.train.max_steps}: no checkpoint is kept there"
                )

    @classmethod
    def from_yaml_dict(cls, data: dict[str, Any]) -> LabParams:
        sources = {
            check_name("sources: source", name): SourceParams.from_dict(
                value or {}, _where=f"sources.{name}"
            )
            for name, value in (data.get("sources") or {}).items()
        }
        if not sources:
            raise ConfigError("params: `sources` is empty; name at least one source")
        params = cls.from_dict({k: v for k, v in data.items() if k != "sources"})
        params.sources = sources
        return params


def find_repo_root(start: Path | None = None) -> Path:
    """``OLMO_LAB_REPO`` if set, else the nearest folder above ``start`` with ``params.yaml``."""
    if os.environ.get("OLMO_LAB_REPO"):
        return Path(os.environ["OLMO_LAB_REPO"]).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file():
            return folder
    raise FileNotFoundError(
        f"no params.yaml in {here} or above: run from the repository, or set OLMO_LAB_REPO"
    )


@dataclass
class Lab:
    """A repository's pipeline: its parameters and the folders of its artifacts (``lab/``)."""

    repo: Path
    params: LabParams
    values: dict[str, Any] = field(default_factory=dict)
    """``params.yaml`` as written (what DVC compares a stage's parameters against)."""
    _plan: ShardPlan | None = field(default=None, repr=False, compare=False)

    @classmethod
    def load(cls, repo: str | os.PathLike[str] | None = None) -> Lab:
        root = Path(repo).resolve() if repo is not None else find_repo_root()
        path = root / "params.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: the lab's parameters live there")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        try:
            params = LabParams.from_yaml_dict(data)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
        return cls(root, params, data)

    def param(self, key: str) -> Any:
        """The value of a dotted key as ``params.yaml`` writes it (``None`` when absent)."""
        node: Any = self.values
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    # -- where every artifact lives (relative paths are what dvc.yaml names) ------------------
    @property
    def root(self) -> Path:
        return self.repo / "lab"

    def raw(self, source: str, shard: str | None = None) -> Path:
        """A source's raw documents: every shard's folder, or one shard's."""
        folder = self.root / "raw" / source
        return folder if shard is None else folder / shard

    def tagged(self, source: str, shard: str | None = None) -> Path:
        """A source's attributes: every shard's folder, or one shard's."""
        folder = self.root / "tagged" / source
        return folder if shard is None else folder / shard

    @property
    def shards_file(self) -> Path:
        return self.repo / SHARDS_FILE

    @property
    def plan(self) -> ShardPlan:
        """The shard plan (``sources/shards.yaml``), read once."""
        from olmo_assets.lab.shards import ShardPlan

        if self._plan is None:
            self._plan = ShardPlan.load(self)
        return self._plan

    def source_shards(self, source: str) -> list[str]:
        """The source's shard keys in order: the shard plan's (``olmo lab shards``); a
        built-in source is one shard, planned or not."""
        from olmo_assets.lab.shards import BUILT_IN_SHARD

        if source in self.params.sources and self.params.sources[source].built_in:
            return [BUILT_IN_SHARD]
        return self.plan.keys(source)

    @property
    def eval_data(self) -> Path:
        return self.root / "eval_data"

    @property
    def dedup(self) -> Path:
        return self.root / "dedup"

    @property
    def curated(self) -> Path:
        return self.root / "curated"

    def curated_shard(self, source: str, shard: str) -> Path:
        """What the mix kept of one source shard: the manifest of its curated files (the
        kept documents and the validation split), hashed."""
        return self.curated / "shards" / source / f"{shard}.json"

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    @property
    def shards(self) -> Path:
        """The token shards: ``<source>/<shard>/{train,validation}``."""
        return self.root / "shards"

    def token_shards(self, source: str, shard: str) -> Path:
        """One source shard's token shards: ``train/`` and (when it has one) ``validation/``."""
        return self.shards / source / shard

    @property
    def corpus_report(self) -> Path:
        return self.root / "reports" / "corpus"

    @property
    def run_dir(self) -> Path:
        return self.root / "runs" / "train"

    def checkpoint(self, step: int) -> Path:
        return self.run_dir / "checkpoints" / f"step{step:06d}-unsharded"

    def checkpoint_record(self, step: int) -> Path:
        return self.root / "checkpoints" / f"step{step}"

    def downstream(self, step: int, task: str) -> Path:
        return self.root / "eval" / "downstream" / f"step{step}" / task

    def perplexity(self, step: int) -> Path:
        return self.root / "eval" / "perplexity" / f"step{step}"

    @property
    def model_report(self) -> Path:
        return self.root / "reports" / "model"

    @property
    def database(self) -> Path:
        """The DuckDB database over every artifact (``olmo query``)."""
        return self.root / "lab.duckdb"

    @property
    def mlflow_uri(self) -> str:
        """``MLFLOW_TRACKING_URI`` if set, else the schema ``mlflow`` of
        ``OLMO_LAB_DATABASE_URL`` if set, else SQLite in the repository (``.mlflow/``):
        :func:`olmo_assets.lab.database.mlflow_tracking_uri`."""
        from olmo_assets.lab.database import mlflow_tracking_uri

        return mlflow_tracking_uri(self.repo)

    @property
    def mlflow_experiment(self) -> str:
        """One experiment per pipeline: named after the repository folder."""
        return f"olmo-lab/{self.repo.name}"
