"""Shared pieces of the Hugging Face interop tests: small random models on both sides."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from olmo_nn.checkpoint import save_checkpoint
from olmo_nn.model import OLMo, TransformerConfig

# Nothing here may reach the Hugging Face hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

SMALL = TransformerConfig(
    d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=96, max_sequence_length=64
)

#: Our model variants transformers can express (OLMo's tokenizer vocabulary, padded rows).
VARIANTS: dict[str, TransformerConfig] = {
    "olmo1-tied": SMALL.replace(weight_tying=True),
    "olmo1-untied": SMALL.replace(weight_tying=False),
    "olmo1-clip-qkv": SMALL.replace(weight_tying=False, clip_qkv=0.5),
    "olmo2": SMALL.as_olmo2(),
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests taking ``variant`` run once per entry of :data:`VARIANTS`."""
    if "variant" in metafunc.fixturenames:
        metafunc.parametrize("variant", list(VARIANTS))


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int) -> None:
    """Give every parameter (norm weights too) distinct, deterministic values."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
        parameter.add_(noise * 0.2)


@pytest.fixture
def make_checkpoint(tmp_path: Path) -> Callable[[TransformerConfig, str], tuple[OLMo, Path]]:
    """Factory: a randomized model of ``config`` saved as a checkpoint under ``tmp_path``."""

    def make(config: TransformerConfig, name: str = "checkpoint") -> tuple[OLMo, Path]:
        torch.manual_seed(0)
        model = OLMo(config)
        randomize(model, seed=1)
        path = save_checkpoint(model, tmp_path / name)
        return model.eval(), path

    return make


@pytest.fixture
def variant_config(variant: str) -> TransformerConfig:
    return VARIANTS[variant]


@pytest.fixture
def randomize_parameters() -> Callable[[torch.nn.Module, int], None]:
    return randomize


@pytest.fixture
def token_ids() -> torch.Tensor:
    """(B=2, T=17) random ids within OLMo's tokenizer vocabulary."""
    return torch.randint(0, 50280, (2, 17), generator=torch.Generator().manual_seed(3))
