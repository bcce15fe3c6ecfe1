"""olmo_nn: OLMo's model, tokenizer, token shards, checkpoints and Hugging Face interop.

>>> import olmo_nn
>>> model = olmo_nn.load_model("path/to/checkpoint")   # nn.Module in eval mode, files verified
>>> logits = model(token_ids)                          # (B, T) -> (B, T, padded vocab)

Names are imported on first use, so command-line tools that need no torch start fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from olmo_nn.checkpoint import load_model, save_checkpoint
    from olmo_nn.model import OLMo, TransformerConfig, preset
    from olmo_nn.tokenizer import Tokenizer

__all__ = ["OLMo", "Tokenizer", "TransformerConfig", "load_model", "preset", "save_checkpoint"]
__version__ = "0.1.0"

_HOMES = {
    "OLMo": "olmo_nn.model",
    "TransformerConfig": "olmo_nn.model",
    "preset": "olmo_nn.model",
    "load_model": "olmo_nn.checkpoint",
    "save_checkpoint": "olmo_nn.checkpoint",
    "Tokenizer": "olmo_nn.tokenizer",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'olmo_nn' has no attribute {name!r}")
