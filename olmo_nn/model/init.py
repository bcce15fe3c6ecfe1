"""Weight initialization schemes, applied to a built model.

``mitchell`` (OLMo 1): truncated normal at +-3 sigma with std 1/sqrt(d_model) for the
embedding and the input projections (QKV, SwiGLU input, untied output), 1/sqrt(2 d (l+1))
for block l's attention output and 1/sqrt(2 hidden (l+1)) for its MLP output.
``normal`` (OLMo 2): every weight N(0, init_std) truncated at +-3 sigma. Norm weights are 1.

One generator draws every weight in a fixed order, so a seed gives the same weights
whatever the sharding: a parameter sharded by FSDP2 (a ``DTensor``) is drawn whole, one
parameter at a time, and this rank keeps its slice. The numbers depend on the generator's
device type (CPU and CUDA generators give different streams), not on the world size.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeGuard, cast

import torch
from torch import nn

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor

    from olmo_nn.model.transformer import Block, OLMo

__all__ = ["init_weights"]


def _trunc_normal(
    weight: torch.Tensor, std: float, cutoff: float, generator: torch.Generator | None
) -> None:
    """``nn.init.trunc_normal_(weight, 0, std, -cutoff*std, cutoff*std)``, the same values.

    torch (2.13) draws the whole tensor from N(0, std), then, while any value lies outside
    the bounds, draws a whole new tensor and takes its values at those positions, comparing
    and ``torch.where``-ing every element each round. Here each round still draws the whole
    tensor (the generator must advance exactly as torch's does, so later tensors get the same
    values) but only the out-of-bounds positions are compared and replaced: about a third of
    torch's time (8 s of CPU for the 60M shape's 76M weights, the bulk of `olmo train`'s
    start-up). ``tests/olmo_nn/model/test_init.py`` checks that the values are identical.
    """
    a, b = -cutoff * std, cutoff * std

    def norm_cdf(x: float) -> float:
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    inside = norm_cdf(b / std) - norm_cdf(a / std)  # torch's rejection sampling needs > 0.3
    if weight.is_meta or inside <= 0.3 or not weight.is_contiguous():
        nn.init.trunc_normal_(weight, mean=0.0, std=std, a=a, b=b, generator=generator)
        return
    lo = weight.new_tensor(a, device="cpu").item()
    hi = weight.new_tensor(b, device="cpu").item()
    weight.normal_(0.0, std, generator=generator)
    flat = weight.view(-1)
    outside = ((flat < lo) | (flat > hi)).nonzero().squeeze(1)
    fresh: torch.Tensor | None = None
    while outside.numel():
        if fresh is None:
            fresh = torch.empty_like(weight)
        fresh.normal_(0.0, std, generator=generator)
        values = fresh.view(-1)[outside]
        flat[outside] = values
        outside = outside[(values < lo) | (values > hi)]


def _is_sharded(weight: torch.Tensor) -> TypeGuard[DTensor]:
    # torch.distributed.tensor takes half a second to import, and a DTensor exists only once
    # it is loaded: a process that never shards (evaluation, conversion) need not pay for it.
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(weight, module.DTensor)


def _init_param(
    weight: torch.Tensor, std: float, cutoff: float, generator: torch.Generator | None
) -> None:
    """:func:`_trunc_normal` on ``weight``; a sharded one gets its slice of a whole draw."""
    if not _is_sharded(weight):
        _trunc_normal(weight, std, cutoff, generator)
        return
    from olmo_nn.parallel import copy_into_shard

    # The whole tensor, so that the generator advances as for an unsharded model; the peak
    # is one full parameter on this device, not the model.
    full = torch.empty(weight.shape, dtype=weight.dtype, device=weight.to_local().device)
    _trunc_normal(full, std, cutoff, generator)
    copy_into_shard(weight, full)


@torch.no_grad()
def init_weights(model: OLMo, *, generator: torch.Generator | None = None) -> None:
    """Initialize ``model`` in place, in a fixed parameter order (so a seed reproduces it).

    Parameters may be FSDP2 shards on any device: each rank writes only its own slices, and
    the gathered weights are the same at any world size (for a given generator device type).
    """
    config = model.config
    cutoff = config.init_cutoff_factor
    d, hidden = config.d_model, config.hidden_size

    def std_for(kind: str, layer_id: int = 0) -> float:
        if config.init == "normal":
            return config.init_std
        if kind == "input":
            return 1.0 / math.sqrt(d)
        if kind == "attn_out":
            return 1.0 / math.sqrt(2 * d * (layer_id + 1))
        return 1.0 / math.sqrt(2 * hidden * (layer_id + 1))  # mlp_out

    _init_param(model.embeddings.weight, std_for("input"), cutoff, generator)
    for block in cast("Iterable[Block]", model.blocks):
        layer = block.layer_id
        for norm in (block.attn_norm, block.q_norm, block.k_norm, block.ff_norm):
            if norm is not None:
                norm.reset_parameters()
        _init_param(block.att_proj.weight, std_for("input"), cutoff, generator)
        _init_param(block.attn_out.weight, std_for("attn_out", layer), cutoff, generator)
        _init_param(block.ff_proj.weight, std_for("input"), cutoff, generator)
        _init_param(block.ff_out.weight, std_for("mlp_out", layer), cutoff, generator)
    model.final_norm.reset_parameters()
    if model.lm_head is not None:
        _init_param(model.lm_head.weight, std_for("input"), cutoff, generator)
