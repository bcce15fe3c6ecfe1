"""The transformer's configuration and OLMo's named presets.

Presets are functions (``TransformerConfig.olmo_1b()``) and also reachable by name
(:func:`preset`), which is what the command line and YAML files use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from olmo_nn.config import Config, ConfigError

__all__ = ["PRESETS", "TransformerConfig", "preset"]

NormType = Literal["layernorm", "rmsnorm"]
NormPlacement = Literal["pre", "post"]
InitScheme = Literal["mitchell", "normal"]


def _round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


@dataclass(kw_only=True)
class TransformerConfig(Config):
    """OLMo's decoder-only transformer (OLMo 1 by default; OLMo 2 through the norm options)."""

    d_model: int
    """Width of the residual stream."""
    n_heads: int
    """Attention heads; ``d_model`` must be divisible by it."""
    n_layers: int
    """Transformer blocks."""
    mlp_hidden_size: int | None = None
    """SwiGLU hidden width (the gate's output). None: 8/3 * d_model rounded up to 128."""
    vocab_size: int = 50280
    """Tokens the tokenizer produces (OLMo's tokenizer: 50280)."""
    embedding_size: int | None = 50304
    """Rows of the embedding and output matrices: vocab_size padded for efficient kernels.
    None means vocab_size. Logits have this width; padded rows are never targets."""
    max_sequence_length: int = 2048
    """Longest context the model is trained for."""
    rope_theta: float = 10000.0
    """RoPE base (OLMo 1: 10000, OLMo 2: 500000)."""
    weight_tying: bool = False
    """Share the input embedding with the output projection."""
    norm_type: NormType = "layernorm"
    """``layernorm`` (OLMo 1) or ``rmsnorm`` (OLMo 2)."""
    norm_affine: bool = False
    """Learnable norm weights (OLMo 1: none; OLMo 2: RMSNorm weights). Never biases."""
    norm_eps: float = 1e-5
    """Norm epsilon (OLMo 1: 1e-5, OLMo 2: 1e-6)."""
    norm_placement: NormPlacement = "pre"
    """``pre``: x + Attn(Norm(x)) (OLMo 1); ``post``: x + Norm(Attn(x)) (OLMo 2)."""
    qk_norm: bool = False
    """Normalize the full query and key projections before RoPE (OLMo 2)."""
    clip_qkv: float | None = None
    """Clamp the fused QKV projection to +-this value (OLMo 1.7 used 8); None disables."""
    init: InitScheme = "mitchell"
    """``mitchell`` (OLMo 1: std by fan-in and depth) or ``normal`` (OLMo 2: init_std everywhere)."""
    init_std: float = 0.02
    """Standard deviation for the ``normal`` scheme."""
    init_cutoff_factor: float = 3.0
    """Initial weights are truncated at +-this many standard deviations."""
    eos_token_id: int = 50279
    """End-of-document token appended between documents."""
    pad_token_id: int = 1
    """Padding token (never a target)."""

    def __post_init__(self) -> None:
        for name in ("d_model", "n_heads", "n_layers", "vocab_size", "max_sequence_length"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be positive")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.head_dim % 2:
            raise ConfigError(f"head dimension {self.head_dim} must be even for RoPE")
        if self.mlp_hidden_size is not None and self.mlp_hidden_size <= 0:
            raise ConfigError(f"mlp_hidden_size={self.mlp_hidden_size} must be positive")
        if self.embedding_size is not None and self.embedding_size < self.vocab_size:
            raise ConfigError(
                f"embedding_size={self.embedding_size} must be >= vocab_size={self.vocab_size}"
            )
        if self.norm_type not in ("layernorm", "rmsnorm"):
            raise ConfigError(f"norm_type={self.norm_type!r}: expected 'layernorm' or 'rmsnorm'")
        if self.norm_placement not in ("pre", "post"):
            raise ConfigError(f"norm_placement={self.norm_placement!r}: expected 'pre' or 'post'")
        if self.init not in ("mitchell", "normal"):
            raise ConfigError(f"init={self.init!r}: expected 'mitchell' or 'normal'")
        if self.norm_type == "rmsnorm" and not self.norm_affine:
            raise ConfigError(
                "norm_type='rmsnorm' needs norm_affine=true (OLMo 2's RMSNorm has weights)"
            )
        if self.norm_placement == "post" and self.norm_type != "rmsnorm":
            raise ConfigError(
                "norm_placement='post' is OLMo 2's block and needs norm_type='rmsnorm'"
            )
        if self.clip_qkv is not None and self.clip_qkv <= 0:
            raise ConfigError(f"clip_qkv={self.clip_qkv} must be positive or null")
        for name in ("eos_token_id", "pad_token_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ConfigError(
                    f"{name}={getattr(self, name)} is outside vocab_size={self.vocab_size}"
                )

    # ---------------------------------------------------------------- derived
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def hidden_size(self) -> int:
        """The SwiGLU hidden width actually used."""
        if self.mlp_hidden_size is not None:
            return self.mlp_hidden_size
        return _round_up(8 * self.d_model / 3, 128)

    @property
    def padded_vocab_size(self) -> int:
        return self.embedding_size if self.embedding_size is not None else self.vocab_size

    @property
    def is_olmo2(self) -> bool:
        return self.norm_type == "rmsnorm" and self.norm_placement == "post" and self.qk_norm

    def num_params(self, *, include_embedding: bool = True) -> int:
        """Parameter count (embedding rows padded, tied output counted once)."""
        d, h = self.d_model, self.hidden_size
        norm = d if self.norm_affine else 0
        per_block = 4 * d * d + 3 * d * h + 2 * norm + (2 * d if self.qk_norm else 0)
        total = self.n_layers * per_block + norm
        embedding = self.padded_vocab_size * d
        if not self.weight_tying:
            total += embedding  # the output projection is always counted
        return total + (embedding if include_embedding else 0)

    def num_flops_per_token(self, sequence_length: int | None = None) -> int:
        """Training FLOPs per token: 6 x (matmul params incl. output projection) + attention."""
        seq = sequence_length or self.max_sequence_length
        d, h = self.d_model, self.hidden_size
        matmul_params = self.n_layers * (4 * d * d + 3 * d * h) + self.padded_vocab_size * d
        return 6 * matmul_params + 12 * self.n_layers * d * seq

    # ---------------------------------------------------------------- presets
    @classmethod
    def tiny(cls) -> TransformerConfig:
        """A 2-layer, 128-wide model that trains on a CPU in seconds (tied embeddings)."""
        return cls(d_model=128, n_heads=4, n_layers=2, mlp_hidden_size=512,
                   max_sequence_length=256, weight_tying=True)  # fmt: skip

    @classmethod
    def olmo_60m(cls) -> TransformerConfig:
        """OLMo ladder 60M: d 384, 12 heads, 16 layers, MLP ratio 8, untied."""
        return cls(d_model=384, n_heads=12, n_layers=16, mlp_hidden_size=4 * 384,
                   weight_tying=False)  # fmt: skip

    @classmethod
    def olmo_150m(cls) -> TransformerConfig:
        """OLMo ladder 150M: d 768, 12 heads, 12 layers, MLP ratio 8, untied."""
        return cls(d_model=768, n_heads=12, n_layers=12, mlp_hidden_size=4 * 768,
                   weight_tying=False)  # fmt: skip

    @classmethod
    def olmo_1b(cls) -> TransformerConfig:
        """OLMo-1B: d 2048, 16 heads, 16 layers, SwiGLU hidden 8192, tied (1,176,764,416)."""
        return cls(d_model=2048, n_heads=16, n_layers=16, mlp_hidden_size=8192,
                   weight_tying=True)  # fmt: skip

    @classmethod
    def olmo_7b(cls) -> TransformerConfig:
        """OLMo-7B: d 4096, 32 heads, 32 layers, SwiGLU hidden 11008, untied (6,888,095,744)."""
        return cls(d_model=4096, n_heads=32, n_layers=32, mlp_hidden_size=11008,
                   weight_tying=False)  # fmt: skip

    @classmethod
    def olmo_65b(cls) -> TransformerConfig:
        """65B shape from OLMo's early 70B config: d 8192, 64 heads, 80 layers, 8/3 d hidden."""
        return cls(d_model=8192, n_heads=64, n_layers=80, weight_tying=False)

    def as_olmo2(self) -> TransformerConfig:
        """The same shape with OLMo 2's block: RMSNorm weights, QK-norm, post-norm, untied."""
        return self.replace(
            norm_type="rmsnorm",
            norm_affine=True,
            norm_eps=1e-6,
            norm_placement="post",
            qk_norm=True,
            rope_theta=500000.0,
            weight_tying=False,
            init="normal",
            init_std=0.02,
        )


PRESETS: dict[str, Callable[[], TransformerConfig]] = {
    "tiny": TransformerConfig.tiny,
    "olmo-60m": TransformerConfig.olmo_60m,
    "olmo-150m": TransformerConfig.olmo_150m,
    "olmo-1b": TransformerConfig.olmo_1b,
    "olmo-7b": TransformerConfig.olmo_7b,
    "olmo-65b": TransformerConfig.olmo_65b,
}


def preset(name: str) -> TransformerConfig:
    """A preset by name; ``NAME-olmo2`` (e.g. ``olmo-1b-olmo2``) gives OLMo 2's block."""
    base, olmo2 = (name[: -len("-olmo2")], True) if name.endswith("-olmo2") else (name, False)
    if base not in PRESETS:
        valid = ", ".join([*PRESETS, *(f"{p}-olmo2" for p in PRESETS)])
        raise ConfigError(f"unknown model preset {name!r}; available: {valid}")
    config = PRESETS[base]()
    return config.as_olmo2() if olmo2 else config
