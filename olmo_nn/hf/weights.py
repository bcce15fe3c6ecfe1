"""Tensor names and layouts: our OLMo state dict <-> transformers' OLMo / OLMo 2 state dict.

One table drives both directions. Most tensors are renamed; two are fused in our model and
split in transformers':

=========================================  ==================================================
ours                                       transformers
=========================================  ==================================================
``embeddings.weight``                      ``model.embed_tokens.weight``
``blocks.{i}.att_proj.weight``  [q; k; v]  ``model.layers.{i}.self_attn.{q,k,v}_proj.weight``
``blocks.{i}.attn_out.weight``             ``model.layers.{i}.self_attn.o_proj.weight``
``blocks.{i}.ff_proj.weight``  [up; gate]  ``model.layers.{i}.mlp.{up,gate}_proj.weight``
``blocks.{i}.ff_out.weight``               ``model.layers.{i}.mlp.down_proj.weight``
``lm_head.weight`` (untied only)           ``lm_head.weight`` (tied: absent, transformers ties)
OLMo 2 only:
``blocks.{i}.q_norm.weight``               ``model.layers.{i}.self_attn.q_norm.weight``
``blocks.{i}.k_norm.weight``               ``model.layers.{i}.self_attn.k_norm.weight``
``blocks.{i}.attn_norm.weight``            ``model.layers.{i}.post_attention_layernorm.weight``
``blocks.{i}.ff_norm.weight``              ``model.layers.{i}.post_feedforward_layernorm.weight``
``final_norm.weight``                      ``model.norm.weight``
=========================================  ==================================================

OLMo 1's norms have no parameters on either side. OLMo's SwiGLU computes ``silu(gate) * up``
with the *second* half of ``ff_proj`` as the gate, which is transformers'
``down(silu(gate_proj(x)) * up_proj(x))``: the first half is ``up_proj``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from olmo_nn.model.config import TransformerConfig
from olmo_nn.model.transformer import OLMo

__all__ = ["TensorMapping", "from_hf_state_dict", "tensor_mapping", "to_hf_state_dict"]

HF_LM_HEAD = "lm_head.weight"
HF_EMBEDDINGS = "model.embed_tokens.weight"
# Buffers some older transformers versions saved; they are recomputed, never loaded.
_IGNORED_HF_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclass(frozen=True)
class TensorMapping:
    """Our tensor ``ours`` is the row-wise concatenation of transformers' tensors ``hf``."""

    ours: str
    hf: tuple[str, ...]


def tensor_mapping(config: TransformerConfig) -> list[TensorMapping]:
    """Every tensor of the model ``config`` describes, with its transformers counterpart(s)."""
    pairs = [TensorMapping("embeddings.weight", (HF_EMBEDDINGS,))]
    for i in range(config.n_layers):
        ours, hf = f"blocks.{i}.", f"model.layers.{i}."
        attn, mlp = f"{hf}self_attn.", f"{hf}mlp."
        pairs += [
            TensorMapping(f"{ours}att_proj.weight", tuple(f"{attn}{p}_proj.weight" for p in "qkv")),
            TensorMapping(f"{ours}attn_out.weight", (f"{attn}o_proj.weight",)),
            TensorMapping(
                f"{ours}ff_proj.weight", (f"{mlp}up_proj.weight", f"{mlp}gate_proj.weight")
            ),
            TensorMapping(f"{ours}ff_out.weight", (f"{mlp}down_proj.weight",)),
        ]
        if config.norm_affine:
            pairs += [
                TensorMapping(f"{ours}attn_norm.weight", (f"{hf}post_attention_layernorm.weight",)),
                TensorMapping(f"{ours}ff_norm.weight", (f"{hf}post_feedforward_layernorm.weight",)),
            ]
        if config.norm_affine and config.qk_norm:
            pairs += [
                TensorMapping(f"{ours}q_norm.weight", (f"{attn}q_norm.weight",)),
                TensorMapping(f"{ours}k_norm.weight", (f"{attn}k_norm.weight",)),
            ]
    if config.norm_affine:
        pairs.append(TensorMapping("final_norm.weight", ("model.norm.weight",)))
    if not config.weight_tying:
        pairs.append(TensorMapping("lm_head.weight", (HF_LM_HEAD,)))
    return pairs


def _our_shapes(config: TransformerConfig) -> dict[str, tuple[int, ...]]:
    model = OLMo(config, init_device="meta")
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def to_hf_state_dict(
    state: Mapping[str, torch.Tensor],
    config: TransformerConfig,
    *,
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """transformers' tensors (contiguous, optionally cast) from our model's state dict."""
    out: dict[str, torch.Tensor] = {}
    for entry in tensor_mapping(config):
        tensor = state[entry.ours]
        if dtype is not None:
            tensor = tensor.to(dtype)
        rows = tensor.shape[0] // len(entry.hf)
        for name, part in zip(entry.hf, tensor.split(rows, dim=0), strict=True):
            out[name] = part.contiguous()
    return out


def from_hf_state_dict(
    tensors: Mapping[str, torch.Tensor], config: TransformerConfig, *, source: str
) -> dict[str, torch.Tensor]:
    """Our state dict from transformers' tensors; names any missing, extra or misshapen one."""
    mapping = tensor_mapping(config)
    shapes = _our_shapes(config)
    expected: dict[str, tuple[int, ...]] = {}
    for entry in mapping:
        rows, *rest = shapes[entry.ours]
        for name in entry.hf:
            expected[name] = (rows // len(entry.hf), *rest)
    optional = {HF_LM_HEAD} if config.weight_tying else set()
    present = {k for k in tensors if not k.endswith(_IGNORED_HF_SUFFIXES)}
    missing = sorted(set(expected) - present)
    unexpected = sorted(present - set(expected) - optional)
    if missing or unexpected:
        raise ValueError(
            f"{source} does not match its config.json: missing tensors {missing or 'none'}, "
            f"unexpected tensors {unexpected or 'none'}"
        )
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(
                f"{source}: tensor {name!r} has shape {tuple(tensors[name].shape)} but config.json "
                f"implies {shape}"
            )
    tied_head = tensors.get(HF_LM_HEAD) if config.weight_tying else None
    if tied_head is not None and not torch.equal(tied_head, tensors[HF_EMBEDDINGS]):
        warnings.warn(
            f"{source}: {HF_LM_HEAD} differs from {HF_EMBEDDINGS} but tie_word_embeddings is "
            "true; it is ignored, as transformers ignores it",
            stacklevel=3,
        )
    return {
        entry.ours: torch.cat([tensors[name] for name in entry.hf], dim=0)
        if len(entry.hf) > 1
        else tensors[entry.hf[0]]
        for entry in mapping
    }
