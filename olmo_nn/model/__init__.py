"""OLMo's transformer, its config and presets (the module itself is imported on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from olmo_nn.model.config import PRESETS, TransformerConfig, preset

if TYPE_CHECKING:
    from olmo_nn.model.transformer import KVCache, OLMo

__all__ = ["PRESETS", "KVCache", "OLMo", "TransformerConfig", "preset"]


def __getattr__(name: str) -> Any:
    if name in ("OLMo", "KVCache"):
        from olmo_nn.model import transformer

        return getattr(transformer, name)
    raise AttributeError(f"module 'olmo_nn.model' has no attribute {name!r}")
