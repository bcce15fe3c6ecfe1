"""Tokenizers: OLMo's (shipped) and any Hugging Face ``tokenizer.json``."""

from olmo_nn.tokenizer.tokenizer import DEFAULT_TOKENIZER, Tokenizer

__all__ = ["DEFAULT_TOKENIZER", "Tokenizer"]
