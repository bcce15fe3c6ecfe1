"""AdamW with OLMo's weight-decay split: which parameters decay, and the optimizer itself.

OLMo 1 decayed only the matrices of the linear layers: norm weights, biases and the input
embedding were left alone. The split is made by parameter name and shape, from
``named_parameters()`` only, so it works unchanged on a model whose parameters are FSDP2
``DTensor``s (a ``DTensor`` reports its global shape) or that ``torch.compile`` or activation
checkpointing has wrapped (names are matched by suffix).
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
    """Use the fused AdamW kernel. None: fused when every parameter is on CUDA, otherwise
    the ``foreach`` implementation."""

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


def _all_on_cuda(params: list[nn.Parameter]) -> bool:
    return all(param.device.type == "cuda" for param in params)


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
    fused = _all_on_cuda(params) if config.fused is None else config.fused
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
