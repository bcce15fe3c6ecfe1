"""Logits parity with transformers' OlmoForCausalLM / Olmo2ForCausalLM, in both directions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from olmo_nn.checkpoint import load_model
from olmo_nn.hf import export_hf, import_hf
from olmo_nn.model import OLMo, TransformerConfig

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4
HF_VOCAB = 384  # a small embedding for models built on the transformers side

EXPECTED_CLASS = {
    "olmo1-tied": "OlmoForCausalLM",
    "olmo1-untied": "OlmoForCausalLM",
    "olmo1-clip-qkv": "OlmoForCausalLM",
    "olmo2": "Olmo2ForCausalLM",
}


def _hf_config(variant: str) -> Any:
    """transformers' own config for each variant, built independently of our exporter."""
    shape = {
        "vocab_size": HF_VOCAB,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 64,
        "eos_token_id": HF_VOCAB - 1,
        "pad_token_id": 1,
    }
    if variant == "olmo2":
        rope = {"rope_type": "default", "rope_theta": 500000.0}
        return transformers.Olmo2Config(**shape, rms_norm_eps=1e-6, rope_parameters=rope)
    rope = {"rope_type": "default", "rope_theta": 20000.0}
    return transformers.OlmoConfig(
        **shape,
        rope_parameters=rope,
        tie_word_embeddings=variant == "olmo1-tied",
        clip_qkv=0.5 if variant == "olmo1-clip-qkv" else None,
    )


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def test_export_matches_transformers(
    variant: str,
    make_checkpoint: Callable[[TransformerConfig, str], tuple[OLMo, Path]],
    variant_config: TransformerConfig,
    token_ids: torch.Tensor,
    tmp_path: Path,
) -> None:
    model, checkpoint = make_checkpoint(variant_config, "checkpoint")
    out = export_hf(checkpoint, tmp_path / "hf")
    hf_model, info = transformers.AutoModelForCausalLM.from_pretrained(
        out, output_loading_info=True
    )
    assert type(hf_model).__name__ == EXPECTED_CLASS[variant]
    assert {k: v for k, v in info.items() if v} == {}, "missing, unexpected or mismatched weights"
    assert hf_model.config.vocab_size == variant_config.padded_vocab_size
    assert hf_model.config.intermediate_size == variant_config.hidden_size
    assert hf_model.config.tie_word_embeddings == variant_config.weight_tying
    if variant_config.weight_tying:
        assert hf_model.lm_head.weight.data_ptr() == hf_model.model.embed_tokens.weight.data_ptr()
    with torch.no_grad():
        ours = model(token_ids)
        theirs = hf_model(token_ids).logits
    assert ours.shape == theirs.shape == (2, 17, variant_config.padded_vocab_size)
    assert _max_diff(ours, theirs) < TOLERANCE


def test_import_matches_transformers(
    variant: str,
    randomize_parameters: Callable[[torch.nn.Module, int], None],
    tmp_path: Path,
) -> None:
    config = _hf_config(variant)
    torch.manual_seed(0)
    hf_model = transformers.AutoModelForCausalLM.from_config(config).eval()
    assert type(hf_model).__name__ == EXPECTED_CLASS[variant]
    randomize_parameters(hf_model, 5)
    hf_model.save_pretrained(tmp_path / "hf")
    checkpoint = import_hf(tmp_path / "hf", tmp_path / "checkpoint")
    model = load_model(checkpoint)
    assert model.config.weight_tying == (variant == "olmo1-tied")
    assert model.config.is_olmo2 == (variant == "olmo2")
    token_ids = torch.randint(0, HF_VOCAB, (2, 17), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = model(token_ids)
        theirs = hf_model(token_ids).logits
    assert ours.shape == theirs.shape == (2, 17, HF_VOCAB)
    assert _max_diff(ours, theirs) < TOLERANCE
