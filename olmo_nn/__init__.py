"""olmo_nn: OLMo's model, tokenizer, token shards, checkpoints and Hugging Face interop.

>>> import olmo_nn
>>> model = olmo_nn.load_model("path/to/checkpoint")   # nn.Module in eval mode
>>> logits = model(token_ids)                          # (B, T) -> (B, T, padded vocab)
"""

from olmo_nn.checkpoint import load_model, save_checkpoint
from olmo_nn.model import OLMo, TransformerConfig, preset
from olmo_nn.tokenizer import Tokenizer

__all__ = ["OLMo", "Tokenizer", "TransformerConfig", "load_model", "preset", "save_checkpoint"]
__version__ = "0.1.0"
