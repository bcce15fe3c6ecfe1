"""AdamW with OLMo's weight-decay split: which parameters decay, and the optimizer itself.

OLMo 1 decayed only the matrices of the linear layers: norm weights, biases and the input
embedding were left alone. The split is made by parameter name and shape, from
``named_parameters()`` only, so it works unchanged on a model whose parameters are FSDP2
``DTensor``s (a ``DTensor`` reports its global shape) or that ``torch.compile`` or activation
checkpointing has wrapped (names are matched by suffix).

:func:`step_unless` steps the optimizer or, where a flag on the device says so, leaves the
parameters and the optimizer state exactly as they were, without the host reading the flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from olmo_nn.config import Config, ConfigError

__all__ = [
    "DECAY_GROUP",
    "NO_DECAY_GROUP",
    "OptimConfig",
    "build_optimizer",
    "param_group_names",
    "step_unless",
]

DECAY_GROUP = "decay"
"""Name of the parameter group that gets weight decay."""
NO_DECAY_GROUP = "no_decay"
"""Name of the parameter group with ``weight_decay=0``."""

_EMBEDDING_NAME = "embeddings.weight"


@dataclass(kw_only=True)
class OptimConfig(Config):
    """AdamW hyperparameters (OLMo 1 defaults) and which parameters are decayed."""

    lr: float = 4e-4
    """Peak learning rate (OLMo 1B: 4e-4, 7B: 3e-4); the schedule scales from it."""
    betas: tuple[float, float] = (0.9, 0.95)
    """Adam's (beta1, beta2), each in [0, 1)."""
    eps: float = 1e-5
    """Adam's epsilon, added to the root of the second moment; positive."""
    weight_decay: float = 0.1
    """Decoupled weight decay of the ``decay`` group; >= 0."""
    decay_norm_and_bias: bool = False
    """Also decay 1-D parameters (norm weights, biases). OLMo 1: no."""
    decay_embeddings: bool = False
    """Also decay ``embeddings.weight``. OLMo 1: no. With weight tying this matrix is also the
    output projection, so it is decayed exactly when this is true."""
    fused: bool | None = None
    """Use the fused AdamW kernel. None: fused when every parameter is on CPU or CUDA (the
    fused kernels' devices), otherwise the ``foreach`` implementation. Only the fused kernel
    skips a step on the device: with ``fused: false`` the trainer reads its skip decision on
    the host, one sync per step (see :func:`step_unless`)."""

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr} must be positive")
        if not isinstance(self.betas, tuple | list) or len(self.betas) != 2:
            raise ConfigError(f"betas={self.betas!r} must be two numbers (beta1, beta2)")
        for index, beta in enumerate(self.betas):
            if not 0.0 <= beta < 1.0:
                raise ConfigError(f"betas[{index}]={beta} must be in [0, 1)")
        if not self.eps > 0:
            raise ConfigError(f"eps={self.eps} must be positive")
        if not self.weight_decay >= 0:
            raise ConfigError(f"weight_decay={self.weight_decay} must be >= 0")


def _is_embedding(name: str) -> bool:
    return name == _EMBEDDING_NAME or name.endswith("." + _EMBEDDING_NAME)


def _is_norm_or_bias(name: str, param: torch.Tensor) -> bool:
    return param.ndim < 2 or name.endswith(".bias") or name == "bias"


def _is_decayed(name: str, param: torch.Tensor, config: OptimConfig) -> bool:
    if _is_norm_or_bias(name, param):
        return config.decay_norm_and_bias
    if _is_embedding(name):
        return config.decay_embeddings
    return True


def _grouped_parameters(
    model: nn.Module, config: OptimConfig
) -> dict[str, list[tuple[str, nn.Parameter]]]:
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {DECAY_GROUP: [], NO_DECAY_GROUP: []}
    # named_parameters() yields a tied parameter once, under its first name (embeddings.weight).
    for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        if not param.requires_grad:
            continue
        group = DECAY_GROUP if _is_decayed(name, param, config) else NO_DECAY_GROUP
        groups[group].append((name, param))
    return {group: members for group, members in groups.items() if members}


def param_group_names(model: nn.Module, config: OptimConfig) -> dict[str, list[str]]:
    """Parameter names per group, exactly as :func:`build_optimizer` groups them.

    Keys are ``"decay"`` then ``"no_decay"``; a group with no parameters is left out (as it is
    from the optimizer). Names are sorted; frozen parameters (``requires_grad=False``) are
    not listed.
    """
    return {
        group: [name for name, _ in members]
        for group, members in _grouped_parameters(model, config).items()
    }


_FUSED_DEVICES = ("cpu", "cuda")
"""Devices with a fused AdamW kernel in every torch build we support."""


def _fused_by_default(params: list[nn.Parameter]) -> bool:
    return all(param.device.type in _FUSED_DEVICES for param in params)


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters in at most two groups.

    Group order is fixed (``decay``, then ``no_decay``; empty groups are dropped) and
    parameters within a group are sorted by name, so the optimizer's state dict lines up
    across runs and restarts. Every group dict carries ``"name"`` and ``"initial_lr"``
    (= ``config.lr``); the ``no_decay`` group has ``weight_decay=0``. Build it after FSDP2's
    ``fully_shard`` so the optimizer holds the sharded ``DTensor`` parameters.
    """
    grouped = _grouped_parameters(model, config)
    if not grouped:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    params = [param for members in grouped.values() for _, param in members]
    fused = _fused_by_default(params) if config.fused is None else config.fused
    param_groups: list[dict[str, Any]] = [
        {
            "name": group,
            "params": [param for _, param in members],
            "weight_decay": config.weight_decay if group == DECAY_GROUP else 0.0,
            "initial_lr": config.lr,
        }
        for group, members in grouped.items()
    ]
    return torch.optim.AdamW(
        param_groups,
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
        weight_decay=config.weight_decay,
        fused=fused,
        foreach=None if fused else True,
    )


def step_unless(optimizer: torch.optim.Optimizer, skip: torch.Tensor) -> None:
    """``optimizer.step()``, or no change at all where the 0-d tensor ``skip`` is true.

    A skipped step leaves the parameters, the moments and the step counts exactly as they
    were, as if ``step()`` had not been called (the optimizer's state is created, zero, if
    it was the first step). With fused kernels (:class:`OptimConfig`'s default) ``skip`` stays
    on the device: the host never waits for it. Other implementations take no such flag, so
    the host reads ``skip`` first (one device sync).
    """
    if all(group.get("fused") for group in optimizer.param_groups):
        # torch's fused Adam/AdamW skip the whole update, step counts included, where the
        # optimizer's ``found_inf`` is 1; that is how torch.amp.GradScaler skips a step on the
        # device (torch documents no other way). tests/olmo_nn/train/test_optim.py pins it.
        optimizer.found_inf = skip.to(torch.float32)  # type: ignore[attr-defined]
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf  # type: ignore[attr-defined]
    elif not bool(skip.item()):
        optimizer.step()
