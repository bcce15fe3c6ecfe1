"""Learning-rate schedules and batch-size warmup, as pure functions of the training position.

Step convention: ``step`` is the number of the optimizer update the LR is used for, counted
from 1, so ``lr_at(1, ...)`` is the LR of the first update and ``lr_at(max_steps, ...)`` that
of the last. ``lr_at(0, ...)`` is defined (the LR before any update: ``warmup_min_lr`` when
there is a warmup). With ``warmup_steps=W`` the LR reaches the peak at update ``W`` exactly.

Nothing here keeps state: a resumed run asks for the LR at its restored step and gets the
same number an uninterrupted run would have used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import torch

from olmo_nn.config import Config, ConfigError

__all__ = [
    "BatchSizeWarmupConfig",
    "SchedulerConfig",
    "SchedulerName",
    "global_batch_instances_at",
    "lr_at",
    "set_lr",
]

SchedulerName = Literal["linear", "cosine", "inverse_sqrt", "constant", "linear_to_zero"]
_SCHEDULER_NAMES: tuple[str, ...] = get_args(SchedulerName)


@dataclass(kw_only=True)
class SchedulerConfig(Config):
    """Linear warmup, then a decay from the peak LR that ends at ``t_max``.

    After the warmup: ``cosine`` falls along a half cosine to ``alpha_f * peak`` at ``t_max``;
    ``linear`` falls on a straight line to the same floor; ``inverse_sqrt`` is
    ``peak * sqrt(warmup_steps / step)`` but never below the floor; ``constant`` stays at the
    peak; ``linear_to_zero`` (the paper's final anneal) falls on a straight line to exactly 0
    at ``t_max``. Every schedule holds its ``t_max`` value after ``t_max``.
    """

    name: SchedulerName = "cosine"
    """One of ``linear``, ``cosine``, ``inverse_sqrt``, ``constant``, ``linear_to_zero``."""
    warmup_steps: int = 2000
    """Updates of linear warmup from ``warmup_min_lr`` to the peak (OLMo 1B: 2000, 7B: 5000);
    0 starts at the peak. Required positive for ``inverse_sqrt``, whose decay it scales."""
    alpha_f: float = 0.1
    """Final LR as a fraction of the peak, in [0, 1]: where ``linear`` and ``cosine`` end
    and ``inverse_sqrt``'s floor. Not used by ``constant`` or ``linear_to_zero``."""
    t_max: int | None = None
    """Update at which the decay ends. None: the run's ``max_steps``."""
    warmup_min_lr: float = 0.0
    """LR at the start of the warmup (update 0)."""
    anneal_steps: int | None = None
    """``linear_to_zero`` only: the LR holds at the peak until ``t_max - anneal_steps``, then
    falls linearly to 0 at ``t_max`` (the paper restarted from a checkpoint and annealed over
    the last 1000 updates: ``anneal_steps=1000, warmup_steps=0``, with the peak set to the LR
    the checkpoint was using). None: the fall starts right after the warmup."""

    def __post_init__(self) -> None:
        if self.name not in _SCHEDULER_NAMES:
            raise ConfigError(
                f"name={self.name!r} is not a scheduler; expected one of {', '.join(_SCHEDULER_NAMES)}"
            )
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps={self.warmup_steps} must be >= 0")
        if self.name == "inverse_sqrt" and self.warmup_steps == 0:
            raise ConfigError(
                "warmup_steps=0 with name='inverse_sqrt': the decay is peak*sqrt(warmup_steps/step), "
                "so warmup_steps must be positive"
            )
        if not 0.0 <= self.alpha_f <= 1.0:
            raise ConfigError(f"alpha_f={self.alpha_f} must be in [0, 1]")
        if self.t_max is not None and self.t_max <= 0:
            raise ConfigError(f"t_max={self.t_max} must be positive or null (the run's max_steps)")
        if self.warmup_min_lr < 0:
            raise ConfigError(f"warmup_min_lr={self.warmup_min_lr} must be >= 0")
        if self.anneal_steps is not None:
            if self.name != "linear_to_zero":
                raise ConfigError(
                    f"anneal_steps={self.anneal_steps} only applies to name='linear_to_zero' "
                    f"(got name={self.name!r}); remove it"
                )
            if self.anneal_steps <= 0:
                raise ConfigError(f"anneal_steps={self.anneal_steps} must be positive or null")


def _decay_start(config: SchedulerConfig, t_max: int) -> int:
    if config.name == "linear_to_zero" and config.anneal_steps is not None:
        start = t_max - config.anneal_steps
        if start < config.warmup_steps:
            raise ValueError(
                f"anneal_steps={config.anneal_steps} reaches back to update {start}, inside the "
                f"warmup of {config.warmup_steps} updates; lower one of them or raise t_max={t_max}"
            )
        return start
    if config.name in ("linear", "cosine", "linear_to_zero") and t_max <= config.warmup_steps:
        raise ValueError(
            f"t_max={t_max} must be greater than warmup_steps={config.warmup_steps} "
            f"for name={config.name!r}"
        )
    if config.name == "inverse_sqrt" and t_max < config.warmup_steps:
        raise ValueError(
            f"t_max={t_max} must be at least warmup_steps={config.warmup_steps} "
            "for name='inverse_sqrt'"
        )
    return config.warmup_steps


def lr_at(step: int, *, peak_lr: float, config: SchedulerConfig, max_steps: int) -> float:
    """The LR for optimizer update number ``step`` (counted from 1; see the module docstring).

    ``t_max`` is ``config.t_max`` or, when that is None, ``max_steps``. Raises ``ValueError``
    for a negative step or a ``t_max`` that leaves no room for the decay after the warmup.
    """
    if step < 0:
        raise ValueError(f"step={step} must be >= 0 (updates are counted from 1)")
    t_max = config.t_max if config.t_max is not None else max_steps
    if t_max <= 0:
        raise ValueError(f"max_steps={max_steps} must be positive when config.t_max is null")
    warmup = config.warmup_steps
    # Checked at every step, so a bad t_max fails at update 1 rather than after the warmup.
    decay_start = warmup if config.name == "constant" else _decay_start(config, t_max)
    if config.name != "constant":  # the constant schedule has no end to hold
        step = min(step, t_max)
    if step < warmup:
        return config.warmup_min_lr + (peak_lr - config.warmup_min_lr) * step / warmup
    if config.name == "constant":
        return peak_lr
    floor = config.alpha_f * peak_lr
    if config.name == "inverse_sqrt":
        return max(floor, peak_lr * math.sqrt(warmup / step))
    if step <= decay_start:
        return peak_lr
    progress = (step - decay_start) / (t_max - decay_start)  # in (0, 1]
    if config.name == "cosine":
        return floor + (peak_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if config.name == "linear":
        return peak_lr - (peak_lr - floor) * progress
    assert config.name == "linear_to_zero", config.name
    return peak_lr * (t_max - step) / (t_max - decay_start)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's ``lr`` to ``lr`` times the group's ``lr_scale`` (default 1)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


@dataclass(kw_only=True)
class BatchSizeWarmupConfig(Config):
    """Start with a smaller global batch and double it every ``doubling_tokens`` tokens.

    OLMo 65B: 1024 instances (~2M tokens) at first, doubling every 100B tokens up to the
    configured global batch (8192 instances, ~16M tokens).
    """

    start_instances: int
    """Global batch size, in instances, at the start of training."""
    doubling_tokens: int
    """Tokens seen between doublings of the global batch (OLMo 65B: 100_000_000_000)."""

    def __post_init__(self) -> None:
        if self.start_instances <= 0:
            raise ConfigError(f"start_instances={self.start_instances} must be positive")
        if self.doubling_tokens <= 0:
            raise ConfigError(f"doubling_tokens={self.doubling_tokens} must be positive")


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def global_batch_instances_at(
    tokens_seen: int, *, final_instances: int, warmup: BatchSizeWarmupConfig | None
) -> int:
    """The global batch size, in instances, for the batch that starts after ``tokens_seen``.

    ``start_instances * 2**(tokens_seen // doubling_tokens)``, capped at ``final_instances``:
    the first doubling applies from exactly ``doubling_tokens`` tokens on. Without a warmup
    it is ``final_instances``. Raises ``ValueError`` unless ``final_instances`` is
    ``start_instances`` times a power of 2 (so the last doubling lands on it).
    """
    if tokens_seen < 0:
        raise ValueError(f"tokens_seen={tokens_seen} must be >= 0")
    if final_instances <= 0:
        raise ValueError(f"final_instances={final_instances} must be positive")
    if warmup is None:
        return final_instances
    start = warmup.start_instances
    if final_instances % start or not _is_power_of_two(final_instances // start):
        raise ValueError(
            f"final_instances={final_instances} must be start_instances={start} times a power "
            f"of 2 (e.g. {start * 8}) for batch-size doubling to reach it"
        )
    num_doublings = tokens_seen // warmup.doubling_tokens
    max_doublings = (final_instances // start).bit_length() - 1
    return start << min(num_doublings, max_doublings)
