"""OLMo's transformer, its config and presets."""

from olmo_nn.model.config import PRESETS, TransformerConfig, preset
from olmo_nn.model.transformer import OLMo

__all__ = ["PRESETS", "OLMo", "TransformerConfig", "preset"]
