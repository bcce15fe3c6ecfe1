"""Our :class:`TransformerConfig` <-> a Hugging Face ``config.json`` (OLMo and OLMo 2).

transformers knows two of the shapes our config can describe: ``OlmoForCausalLM`` (OLMo 1:
non-affine LayerNorm with eps 1e-5 fixed in its code, pre-norm, optional QKV clipping) and
``Olmo2ForCausalLM`` (RMSNorm with weights, QK-norm over the full projections, post-norm).
Anything else is refused by name in both directions rather than converted into a model that
computes something different. This module needs no transformers import: the JSON is written
by hand, in the form transformers 5 saves (``rope_parameters``, ``dtype``) plus the older keys
(``rope_theta``, ``torch_dtype``) that transformers 4 reads.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from olmo_nn.model.config import TransformerConfig

__all__ = [
    "ARCHITECTURES",
    "HFArchitecture",
    "hf_architecture",
    "hf_config_from_transformer",
    "transformer_config_from_hf",
]

# transformers hard-codes OLMo 1's LayerNorm epsilon (OlmoLayerNorm: eps=1e-5).
OLMO1_NORM_EPS = 1e-5
# Olmo2Config's default when config.json has no rms_norm_eps.
OLMO2_DEFAULT_RMS_NORM_EPS = 1e-5
DEFAULT_ROPE_THETA = 10000.0


@dataclass(frozen=True)
class HFArchitecture:
    """One transformers architecture we convert to and from."""

    model_type: str
    """``model_type`` in config.json."""
    class_name: str
    """The ``architectures`` entry (the class AutoModelForCausalLM builds)."""


OLMO = HFArchitecture(model_type="olmo", class_name="OlmoForCausalLM")
OLMO2 = HFArchitecture(model_type="olmo2", class_name="Olmo2ForCausalLM")
ARCHITECTURES: dict[str, HFArchitecture] = {a.model_type: a for a in (OLMO, OLMO2)}


def _supported() -> str:
    return ", ".join(
        f"{a.class_name} (model_type {a.model_type!r})" for a in ARCHITECTURES.values()
    )


def hf_architecture(hf_config: dict[str, Any], *, source: str = "config.json") -> HFArchitecture:
    """The architecture a config.json describes; other architectures raise ``ValueError``."""
    model_type = hf_config.get("model_type")
    architectures = hf_config.get("architectures") or []
    arch = ARCHITECTURES.get(model_type) if isinstance(model_type, str) else None
    if arch is None or any(name != arch.class_name for name in architectures):
        found = ", ".join(map(str, architectures)) or "no architectures entry"
        raise ValueError(
            f"{source} describes {found} (model_type {model_type!r}), which cannot be imported; "
            f"supported architectures: {_supported()}"
        )
    return arch


# ------------------------------------------------------------------------------------ export
def _refuse(config: TransformerConfig, arch: HFArchitecture, field: str, why: str) -> ValueError:
    return ValueError(
        f"model config {field}={getattr(config, field)!r} cannot be expressed by transformers' "
        f"{arch.class_name}: {why}"
    )


def _export_architecture(config: TransformerConfig) -> HFArchitecture:
    """OLMo 1 or OLMo 2, or a ValueError naming the field transformers cannot express."""
    if config.norm_type == "rmsnorm":
        arch = OLMO2
        if not config.is_olmo2:
            for field, wanted in (("norm_placement", "post"), ("qk_norm", True)):
                if getattr(config, field) != wanted:
                    raise _refuse(
                        config,
                        arch,
                        field,
                        f"RMSNorm models export as OLMo 2, which has {field}={wanted!r}",
                    )
        if config.clip_qkv is not None:
            raise _refuse(config, arch, "clip_qkv", "Olmo2ForCausalLM does not clip QKV")
        return arch
    arch = OLMO
    if config.norm_affine:
        raise _refuse(config, arch, "norm_affine", "its LayerNorm has no weights")
    if config.norm_eps != OLMO1_NORM_EPS:
        raise _refuse(
            config, arch, "norm_eps", f"its LayerNorm epsilon is fixed at {OLMO1_NORM_EPS}"
        )
    if config.qk_norm:
        raise _refuse(config, arch, "qk_norm", "it has no QK-norm")
    return arch


def hf_config_from_transformer(
    config: TransformerConfig, *, dtype: str | None = None
) -> dict[str, Any]:
    """The config.json of ``config`` as transformers' OLMo / OLMo 2.

    ``vocab_size`` is the padded embedding size, as in OLMo's own Hugging Face releases: the
    logits keep their width and the extra rows are never produced by the tokenizer. ``dtype``
    (e.g. "bfloat16") is the weights' dtype, written when given.
    """
    arch = _export_architecture(config)
    hf: dict[str, Any] = {
        "architectures": [arch.class_name],
        "model_type": arch.model_type,
        "vocab_size": config.padded_vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.hidden_size,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_heads,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_sequence_length,
        "initializer_range": config.init_std,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "rope_theta": config.rope_theta,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": config.weight_tying,
        "use_cache": True,
        "bos_token_id": None,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
    }
    if dtype is not None:
        hf.update(dtype=dtype, torch_dtype=dtype)
    if arch is OLMO:
        hf["clip_qkv"] = config.clip_qkv
    else:
        hf["rms_norm_eps"] = config.norm_eps
    return hf


# ------------------------------------------------------------------------------------ import
def _unsupported(source: str, field: str, value: Any, why: str) -> ValueError:
    return ValueError(f"{source}: {field}={value!r} cannot be imported: {why}")


def _rope_theta(hf: dict[str, Any], source: str) -> float:
    scaling = hf.get("rope_scaling")
    if scaling:
        raise _unsupported(source, "rope_scaling", scaling, "our model implements plain RoPE only")
    params = hf.get("rope_parameters")
    if params is None:
        return float(hf.get("rope_theta", DEFAULT_ROPE_THETA))
    if not isinstance(params, dict):
        raise _unsupported(source, "rope_parameters", params, "expected a mapping")
    extra = {k: v for k, v in params.items() if k not in ("rope_type", "rope_theta")}
    if params.get("rope_type", "default") != "default" or extra:
        raise _unsupported(
            source, "rope_parameters", params, "our model implements plain RoPE only"
        )
    return float(params.get("rope_theta", hf.get("rope_theta", DEFAULT_ROPE_THETA)))


def _required_int(hf: dict[str, Any], key: str, source: str) -> int:
    if hf.get(key) is None:
        raise ValueError(f"{source} has no {key!r}, which the model's shape needs")
    return int(hf[key])


def _token_id(hf: dict[str, Any], key: str) -> int | None:
    value = hf.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    return int(value) if value is not None else None


def transformer_config_from_hf(
    hf: dict[str, Any],
    *,
    tokenizer_vocab_size: int | None = None,
    generation: dict[str, Any] | None = None,
    source: str = "config.json",
) -> TransformerConfig:
    """Our config for an OLMo / OLMo 2 config.json; what we cannot express raises ValueError.

    config.json's ``vocab_size`` is the number of embedding rows; our ``vocab_size`` (ids the
    tokenizer produces) is the tokenizer's size when one is given, else the same row count.
    ``generation`` (generation_config.json) supplies token ids config.json lacks.
    """
    arch = hf_architecture(hf, source=source)
    d_model = _required_int(hf, "hidden_size", source)
    n_heads = _required_int(hf, "num_attention_heads", source)
    kv_heads = hf.get("num_key_value_heads")
    if kv_heads is not None and int(kv_heads) != n_heads:
        raise _unsupported(
            source,
            "num_key_value_heads",
            kv_heads,
            f"our attention needs it equal to num_attention_heads={n_heads}",
        )
    if hf.get("attention_bias"):
        raise _unsupported(
            source, "attention_bias", hf["attention_bias"], "our model has no biases"
        )
    if hf.get("hidden_act", "silu") != "silu":
        raise _unsupported(source, "hidden_act", hf["hidden_act"], "our MLP is SwiGLU (silu)")
    head_dim = hf.get("head_dim")
    if head_dim is not None and int(head_dim) != d_model // n_heads:
        raise _unsupported(
            source,
            "head_dim",
            head_dim,
            f"our head dimension is hidden_size/num_attention_heads={d_model // n_heads}",
        )
    if hf.get("attention_dropout"):
        warnings.warn(
            f"{source}: attention_dropout={hf['attention_dropout']} is ignored (our model has no dropout)",
            stacklevel=3,
        )
    rows = _required_int(hf, "vocab_size", source)
    generation = generation or {}
    eos = _token_id(hf, "eos_token_id")
    if eos is None:
        eos = _token_id(generation, "eos_token_id")
    if eos is None:
        raise _unsupported(
            source, "eos_token_id", None, "our model config needs the end-of-document token id"
        )
    pad = _token_id(hf, "pad_token_id")
    if pad is None:
        pad = _token_id(generation, "pad_token_id")
    if pad is None:
        pad = eos  # the usual stand-in: padding positions are never targets
    vocab_size = rows
    if tokenizer_vocab_size is not None and max(eos, pad) < tokenizer_vocab_size <= rows:
        vocab_size = tokenizer_vocab_size
    fields: dict[str, Any] = {
        "d_model": d_model,
        "n_heads": n_heads,
        "n_layers": _required_int(hf, "num_hidden_layers", source),
        "mlp_hidden_size": _required_int(hf, "intermediate_size", source),
        "vocab_size": vocab_size,
        "embedding_size": rows,
        "max_sequence_length": int(hf.get("max_position_embeddings", 2048)),
        "rope_theta": _rope_theta(hf, source),
        "weight_tying": bool(hf.get("tie_word_embeddings", False)),
        "eos_token_id": eos,
        "pad_token_id": pad,
    }
    if arch is OLMO:
        clip = hf.get("clip_qkv")
        fields["clip_qkv"] = float(clip) if clip is not None else None
        return TransformerConfig(**fields)
    if hf.get("clip_qkv") is not None:
        warnings.warn(
            f"{source}: clip_qkv={hf['clip_qkv']} is ignored, as Olmo2ForCausalLM ignores it",
            stacklevel=3,
        )
    return TransformerConfig(
        **fields,
        norm_type="rmsnorm",
        norm_affine=True,
        norm_eps=float(hf.get("rms_norm_eps", OLMO2_DEFAULT_RMS_NORM_EPS)),
        norm_placement="post",
        qk_norm=True,
        init="normal",
        init_std=float(hf.get("initializer_range", 0.02)),
    )
