"""Weight initialization schemes, applied to a built model.

``mitchell`` (OLMo 1): truncated normal at +-3 sigma with std 1/sqrt(d_model) for the
embedding and the input projections (QKV, SwiGLU input, untied output), 1/sqrt(2 d (l+1))
for block l's attention output and 1/sqrt(2 hidden (l+1)) for its MLP output.
``normal`` (OLMo 2): every weight N(0, init_std) truncated at +-3 sigma. Norm weights are 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

if TYPE_CHECKING:
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


@torch.no_grad()
def init_weights(model: OLMo, *, generator: torch.Generator | None = None) -> None:
    """Initialize ``model`` in place, in a fixed parameter order (so a seed reproduces it)."""
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

    _trunc_normal(model.embeddings.weight, std_for("input"), cutoff, generator)
    for block in cast("Iterable[Block]", model.blocks):
        layer = block.layer_id
        for norm in (block.attn_norm, block.q_norm, block.k_norm, block.ff_norm):
            if norm is not None:
                norm.reset_parameters()
        _trunc_normal(block.att_proj.weight, std_for("input"), cutoff, generator)
        _trunc_normal(block.attn_out.weight, std_for("attn_out", layer), cutoff, generator)
        _trunc_normal(block.ff_proj.weight, std_for("input"), cutoff, generator)
        _trunc_normal(block.ff_out.weight, std_for("mlp_out", layer), cutoff, generator)
    model.final_norm.reset_parameters()
    if model.lm_head is not None:
        _trunc_normal(model.lm_head.weight, std_for("input"), cutoff, generator)
