"""Loss-spike tools: gradient clipping, z-loss, and skipping steps whose loss is an outlier.

Steps are numbered as in :mod:`olmo_nn.train.schedule`: step 1 is the first optimizer update.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from olmo_nn.config import Config, ConfigError

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # a torch build without distributed support has no DTensor grads
    DTensor = None  # type: ignore[assignment,misc]

__all__ = [
    "ClipConfig",
    "OutlierDetector",
    "SkipStepConfig",
    "clip_grad_norm",
    "clip_threshold",
    "z_loss",
]


@dataclass(kw_only=True)
class ClipConfig(Config):
    """Clipping of the global gradient L2 norm, optionally looser for the first steps."""

    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this (OLMo: 1.0); None: never clip (still measured)."""
    early_max_grad_norm: float | None = None
    """Threshold for steps 1..``early_steps`` instead of ``max_grad_norm`` (OLMo 7B: 10.0,
    i.e. 10x looser for the first 1000 steps); None: no separate early threshold."""
    early_steps: int = 1000
    """How many updates, from step 1, use ``early_max_grad_norm``."""

    def __post_init__(self) -> None:
        for name in ("max_grad_norm", "early_max_grad_norm"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name}={value} must be positive or null (no clipping)")
        if self.early_steps < 0:
            raise ConfigError(f"early_steps={self.early_steps} must be >= 0")


def clip_threshold(step: int, config: ClipConfig) -> float | None:
    """The max grad norm for update ``step`` (from 1): the early one up to ``early_steps``."""
    if config.early_max_grad_norm is not None and step <= config.early_steps:
        return config.early_max_grad_norm
    return config.max_grad_norm


def _is_dtensor(tensor: torch.Tensor) -> bool:
    return DTensor is not None and isinstance(tensor, DTensor)


def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all ``grads`` as one vector, as a plain tensor with the global value."""
    sharded = [g for g in grads if _is_dtensor(g)]
    local = [g for g in grads if not _is_dtensor(g)]
    parts: list[torch.Tensor] = []
    if sharded:
        # torch's norm of Shard(0) DTensors comes back as a Replicate DTensor that already holds
        # the global norm (the reduction across ranks happens inside); full_tensor() unwraps it.
        norm = torch.nn.utils.get_total_norm(sharded, norm_type=2.0)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        parts.append(norm)
    if local:
        parts.append(torch.nn.utils.get_total_norm(local, norm_type=2.0))
    if len(parts) == 1:
        return parts[0]
    device = parts[0].device
    return torch.linalg.vector_norm(torch.stack([p.to(device) for p in parts]))


@torch.no_grad()
def clip_grad_norm(
    parameters: Iterable[torch.Tensor] | torch.Tensor, max_norm: float | None
) -> torch.Tensor:
    """Global L2 norm of the gradients, before clipping; clips them in place to ``max_norm``.

    Parameters without a gradient are ignored. Under FSDP2 the gradients are ``DTensor``
    shards: the norm is still that of the full gradients, identical on every rank, and is
    returned as a plain tensor (never a ``DTensor``). Replicated (plain) gradients mixed in
    are counted once. ``max_norm=None`` only measures. Clipping scales by
    ``max_norm / (norm + 1e-6)`` when that is below 1, as ``torch.nn.utils.clip_grad_norm_``
    does; a non-finite norm makes the gradients non-finite too, so skip that step.
    """
    params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = _total_norm(grads)
    if max_norm is not None:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


def z_loss(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PaLM/OLMo z-loss: the mean over positions of ``logsumexp(logits) ** 2``, in fp32.

    ``logits`` is (..., vocab); ``mask`` (the shape of ``logits`` without its last dimension,
    bool or 0/1) keeps only the positions where it is true; with every position masked out
    the loss is 0. It pulls the softmax normalizer towards 1; the trainer scales it by a
    coefficient (OLMo: 1e-5).
    """
    log_z = torch.logsumexp(logits.float(), dim=-1)  # (...)
    squared = log_z.square()
    if mask is None:
        return squared.mean()
    if mask.shape != squared.shape:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} must be the logits shape without the vocab "
            f"dimension, {tuple(squared.shape)}"
        )
    weights = mask.to(squared.dtype)
    return (squared * weights).sum() / weights.sum().clamp(min=1.0)


class OutlierDetector:
    """Flags a value (a step's loss or grad norm) far from the recent ones, on its device.

    A value is an outlier when it is NaN or infinite, or when at least ``min_values`` values
    have been seen and ``|v - mean| > sigma * std`` over the last ``window`` of them (sample
    standard deviation). With fewer values it never flags a finite value. Record each value
    after deciding, outlier or not: keeping outliers in the window lets it follow a real
    change of level (as OLMo-core does) instead of skipping forever. Non-finite values are
    never recorded.

    The window and its statistics are float64 tensors on ``device`` and :meth:`flag` /
    :meth:`record` take and give 0-d tensors, so a training step decides without waiting
    for the device (no host sync). The statistics are those of a float64 computation over
    the window (the mean of float32 losses is exact there, the variance is rounded once per
    term), so a decision can differ from an exact one only for a value within about 1e-15
    (relative) of the threshold. :meth:`is_outlier` and :meth:`update` are the same on
    Python floats (each reads the answer back: for tests and offline use).
    """

    def __init__(
        self,
        *,
        window: int = 128,
        sigma: float = 6.0,
        min_values: int | None = None,
        device: torch.device | str | None = None,
    ):
        """``min_values`` defaults to ``min(20, window)``; it must be in [2, window]."""
        if window < 2:
            raise ValueError(f"window={window} must be at least 2 (a std needs two values)")
        if not sigma > 0:
            raise ValueError(f"sigma={sigma} must be positive")
        min_values = min(20, window) if min_values is None else min_values
        if not 2 <= min_values <= window:
            raise ValueError(f"min_values={min_values} must be between 2 and window={window}")
        self.window = window
        self.sigma = sigma
        self.min_values = min_values
        self.device = torch.device(device or "cpu")
        # Newest value last; the first ``window - count`` slots are unused (zeros).
        self._values = torch.zeros(window, dtype=torch.float64, device=self.device)
        self._count = torch.zeros((), dtype=torch.int64, device=self.device)
        self._slots = torch.arange(window, device=self.device)

    def __len__(self) -> int:
        """How many values the window holds (reads it back from the device)."""
        return int(self._count.item())

    def _as_value(self, value: torch.Tensor | float) -> torch.Tensor:
        return torch.as_tensor(value, dtype=torch.float64, device=self.device).reshape(())

    def flag(self, value: torch.Tensor) -> torch.Tensor:
        """Whether ``value`` (a 0-d tensor) is an outlier, as a 0-d bool tensor on the
        detector's device; it does not record ``value`` and never syncs with the host."""
        value = self._as_value(value)
        held = self._slots >= self.window - self._count  # (window,) the values in use
        count = self._count.to(torch.float64)
        mean = torch.where(held, self._values, 0.0).sum() / count
        deviations = torch.where(held, self._values - mean, 0.0)
        std = (deviations.square().sum() / (count - 1)).sqrt()
        # With fewer than two values mean/std are NaN, and every comparison with NaN is false.
        spike = (value - mean).abs() > self.sigma * std
        return ~torch.isfinite(value) | ((self._count >= self.min_values) & spike)

    def record(self, value: torch.Tensor, keep: torch.Tensor | bool = True) -> None:
        """Add ``value`` (a 0-d tensor) to the window where it is finite and ``keep`` (a 0-d
        bool tensor or a bool) is true; on the device, without a host sync."""
        value = self._as_value(value)
        add = torch.isfinite(value) & torch.as_tensor(keep, device=self.device)
        shifted = torch.cat([self._values[1:], value.reshape(1)])
        self._values = torch.where(add, shifted, self._values)
        self._count = torch.where(add, (self._count + 1).clamp(max=self.window), self._count)

    def is_outlier(self, value: float) -> bool:
        """:meth:`flag` for a Python float (does not record it)."""
        return bool(self.flag(self._as_value(value)).item())

    def update(self, value: float) -> None:
        """:meth:`record` for a Python float (non-finite values are ignored)."""
        self.record(self._as_value(value))

    def state_dict(self) -> dict[str, Any]:
        """The window's values, oldest first, as plain floats (read back from the device)."""
        values = self._values.tolist()
        return {"values": values[self.window - len(self) :]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s values (the newest ``window`` if there are more)."""
        kept = [float(v) for v in state["values"]][-self.window :]
        values = [0.0] * (self.window - len(kept)) + kept
        self._values = torch.tensor(values, dtype=torch.float64, device=self.device)
        self._count = torch.tensor(len(kept), dtype=torch.int64, device=self.device)


@dataclass(kw_only=True)
class SkipStepConfig(Config):
    """Skip the optimizer step when the loss or grad norm is an outlier (OLMo: > 6 sigma)."""

    enabled: bool = False
    """Turn step skipping on."""
    sigma: float = 6.0
    """How many standard deviations from the window's mean make an outlier."""
    window: int = 128
    """How many recent steps the mean and standard deviation are taken over."""

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ConfigError(f"sigma={self.sigma} must be positive")
        if self.window < 2:
            raise ConfigError(f"window={self.window} must be at least 2")

    def build(self, device: torch.device | str | None = None) -> OutlierDetector:
        """A fresh detector with this window and sigma, its window on ``device`` (CPU)."""
        return OutlierDetector(window=self.window, sigma=self.sigma, device=device)
