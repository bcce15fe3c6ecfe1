"""The training run's configuration: one typed tree, saved with every checkpoint.

``olmo train CONFIG.yaml key=value ...`` loads a :class:`TrainConfig`, applies overrides and
resolves defaults (the sequence length from the model, ``t_max`` from ``max_steps``); the
resolved tree goes into ``RUN_DIR/config.yaml``, each checkpoint and MLflow's parameters.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

from olmo_nn.config import Config, ConfigError
from olmo_nn.model.config import TransformerConfig
from olmo_nn.paths import safe_name
from olmo_nn.train.data_order import DataConfig
from olmo_nn.train.optim import OptimConfig
from olmo_nn.train.schedule import BatchSizeWarmupConfig, SchedulerConfig
from olmo_nn.train.stability import ClipConfig, SkipStepConfig

__all__ = ["HARDWARE_FIELDS", "EvalConfig", "TrainConfig", "math_of"]

Precision = Literal["fp32", "bf16"]

HARDWARE_FIELDS = (
    "run_name",
    "micro_batch_size",
    "save_interval",
    "save_interval_unsharded",
    "save_num_checkpoints_to_keep",
    "async_checkpoint",
    "log_interval",
    "eval",
    "device",
    "fsdp",
    "activation_checkpointing",
    "compile",
    "mlflow",
    "mlflow_experiment",
    "data.num_workers",
    "data.validation_paths",
)
"""The fields of a run's config that do not change what it computes, only how, where and what
it reports: a run resumes with other values of these (on other hardware, with another
micro-batch size or node count), and with the same values of every other field (model,
optimizer, schedule, data, global batch, seed, precision)."""


def math_of(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config's tree without its :data:`HARDWARE_FIELDS`."""
    tree = copy.deepcopy(config)
    for dotted in HARDWARE_FIELDS:
        *parents, last = dotted.split(".")
        node = tree
        for key in parents:
            node = node.get(key, {})
        node.pop(last, None)
    return tree


@dataclass(kw_only=True)
class EvalConfig(Config):
    """In-loop evaluation: held-out perplexity on ``data.validation_paths`` every N steps."""

    interval: int = 0
    """Evaluate every this many steps (0 disables in-loop evaluation)."""
    max_batches: int = 8
    """Validation micro-batches per evaluation (a fixed, deterministic subset)."""
    batch_size: int | None = None
    """Instances per validation micro-batch (default: the training micro-batch size)."""
    downstream_tasks: list[str] = field(default_factory=list)
    """Downstream tasks scored in the loop too (e.g. [arc_easy, piqa]); same code as `olmo eval`."""
    downstream_limit: int = 50
    """Examples per downstream task in the loop (a fixed subset: OLMo's sampling, seed 1234)."""

    def __post_init__(self) -> None:
        if self.interval < 0 or self.max_batches <= 0:
            raise ConfigError(f"eval.interval={self.interval} must be >= 0 and max_batches > 0")


@dataclass(kw_only=True)
class TrainConfig(Config):
    """Everything a training run needs; paths are relative to the working directory."""

    run_name: str = "run"
    """Name of the run (MLflow run name, default run directory under runs/)."""
    model: TransformerConfig
    """The model to train."""
    data: DataConfig
    """Token shards, data-order seed, validation shards."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """AdamW hyperparameters (OLMo's defaults)."""
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    """Learning-rate schedule."""
    clip: ClipConfig = field(default_factory=ClipConfig)
    """Gradient clipping by global norm."""
    skip_step: SkipStepConfig = field(default_factory=SkipStepConfig)
    """Skip a step whose loss or gradient norm is an outlier."""
    z_loss: float | None = None
    """Coefficient of the z-loss (OLMo 2: 1e-5); None disables it."""
    global_batch_size: int
    """Instances per optimizer step (at the end of any batch-size warmup)."""
    micro_batch_size: int
    """Instances per forward/backward on one device; accumulation is derived."""
    batch_size_warmup: BatchSizeWarmupConfig | None = None
    """Start with fewer instances per step and double (OLMo 65B: 1024, every 100B tokens)."""
    max_steps: int
    """Optimizer steps in the run (the schedule's length)."""
    seed: int = 6198
    """Seed of the model's initial weights."""
    init_from: str | None = None
    """An unsharded checkpoint whose weights start the run (e.g. an anneal); None: fresh init."""
    save_interval: int = 1000
    """Write a sharded (torch.distributed.checkpoint) checkpoint every this many steps."""
    save_interval_unsharded: int | None = None
    """Write an unsharded (safetensors) checkpoint every this many steps; None: only at the end."""
    save_num_checkpoints_to_keep: int = 2
    """Sharded checkpoints kept (older ones are deleted); unsharded ones are all kept."""
    async_checkpoint: bool = True
    """Write sharded checkpoints in the background while training goes on (torch DCP's async
    save): the same files, complete and renamed into place before any other save, the end of
    the run or a stop; costs one more host copy of each rank's model and optimizer shards.
    false: the loop waits for each save."""
    log_interval: int = 1
    """Print a progress line every this many steps (metrics.jsonl gets every step). It is
    also how often the host reads the steps' metrics back from the device, looks for a stop
    request and stops on a non-finite loss (checkpoint, evaluation and last steps read too):
    one sync per interval, so set 10 or more on a GPU."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """In-loop evaluation."""
    precision: Precision = "fp32"
    """``bf16``: bf16 compute with fp32 master weights, optimizer state and reductions."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""
    fsdp: bool = True
    """Shard with FSDP2 when there is more than one process, and on CUDA in one process too."""
    activation_checkpointing: bool = False
    """Recompute block activations in backward to save memory."""
    compile: bool = False
    """``torch.compile`` each block."""
    mlflow: bool = True
    """Track the run in MLflow (tracking URI from MLFLOW_TRACKING_URI, default sqlite:///mlflow.db)."""
    mlflow_experiment: str = "olmo-lab"
    """MLflow experiment name."""

    def __post_init__(self) -> None:
        for name in (
            "global_batch_size",
            "micro_batch_size",
            "max_steps",
            "save_interval",
            "log_interval",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be positive")
        if self.save_interval_unsharded is not None and self.save_interval_unsharded <= 0:
            raise ConfigError(
                f"save_interval_unsharded={self.save_interval_unsharded} must be positive or null"
            )
        if self.save_num_checkpoints_to_keep < 1:
            raise ConfigError("save_num_checkpoints_to_keep must be >= 1")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision={self.precision!r}: expected 'fp32' or 'bf16'")
        if self.z_loss is not None and self.z_loss < 0:
            raise ConfigError(f"z_loss={self.z_loss} must be >= 0 or null")
        try:
            safe_name("run", self.run_name, names="the run's folder under runs/")
        except ValueError as error:
            raise ConfigError(str(error)) from None

    @property
    def sequence_length(self) -> int:
        return self.data.sequence_length or self.model.max_sequence_length

    def resolved(self) -> TrainConfig:
        """Defaults filled in from other sections, so the saved config is self-contained."""
        sequence_length = self.sequence_length
        data = self.data.replace(sequence_length=sequence_length)
        scheduler = self.scheduler
        if scheduler.t_max is None:
            scheduler = scheduler.replace(t_max=self.max_steps)
        if sequence_length > self.model.max_sequence_length:
            raise ConfigError(
                f"data.sequence_length={sequence_length} exceeds the model's "
                f"max_sequence_length={self.model.max_sequence_length}"
            )
        return self.replace(data=data, scheduler=scheduler)

    def accumulation_steps(self, world_size: int, global_batch_size: int | None = None) -> int:
        """Micro-batches per device per step; refuses batch arithmetic that does not divide."""
        batch = global_batch_size or self.global_batch_size
        per_step = self.micro_batch_size * world_size
        if batch % per_step:
            raise ValueError(
                f"global_batch_size={batch} is not divisible by micro_batch_size="
                f"{self.micro_batch_size} x world_size={world_size} (= {per_step}); "
                "change one of them"
            )
        return batch // per_step
