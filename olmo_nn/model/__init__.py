"""OLMo's transformer, its config and presets (the module itself is imported on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from olmo_nn.model.config import PRESETS, TransformerConfig, preset

if TYPE_CHECKING:
    from olmo_nn.model.transformer import OLMo

__all__ = ["PRESETS", "OLMo", "TransformerConfig", "preset"]


def __getattr__(name: str) -> Any:
    if name == "OLMo":
        from olmo_nn.model.transformer import OLMo

        return OLMo
    raise AttributeError(f"module 'olmo_nn.model' has no attribute {name!r}")
