"""Preset shapes and parameter counts match OLMo's published models."""

from __future__ import annotations

import pytest
import torch

from olmo_nn.model import OLMo, TransformerConfig, preset


@pytest.mark.parametrize(
    ("name", "num_params"),
    [
        ("olmo-1b", 1_176_764_416),  # OLMo-1B, tied
        ("olmo-7b", 6_888_095_744),  # OLMo-7B, untied
    ],
)
def test_published_parameter_counts(name: str, num_params: int) -> None:
    config = preset(name)
    assert config.num_params() == num_params
    # The module built from the config has exactly those tensors (meta device: no memory).
    assert OLMo(config, init_device="meta").num_params() == num_params


def test_shapes_of_each_preset() -> None:
    shapes = {
        name: (c.d_model, c.n_heads, c.n_layers, c.hidden_size, c.weight_tying)
        for name in ("tiny", "olmo-60m", "olmo-150m", "olmo-1b", "olmo-7b", "olmo-65b")
        for c in [preset(name)]
    }
    assert shapes == {
        "tiny": (128, 4, 2, 512, True),
        "olmo-60m": (384, 12, 16, 1536, False),
        "olmo-150m": (768, 12, 12, 3072, False),
        "olmo-1b": (2048, 16, 16, 8192, True),
        "olmo-7b": (4096, 32, 32, 11008, False),
        "olmo-65b": (8192, 64, 80, 21888, False),
    }


def test_swiglu_hidden_defaults_to_eight_thirds_rounded_to_128() -> None:
    assert TransformerConfig(d_model=4096, n_heads=32, n_layers=1).hidden_size == 11008
    assert TransformerConfig(d_model=96, n_heads=4, n_layers=1).hidden_size == 256


def test_olmo2_variant() -> None:
    config = preset("olmo-1b-olmo2")
    assert config.is_olmo2
    assert (config.norm_type, config.norm_eps, config.rope_theta, config.weight_tying) == (
        "rmsnorm", 1e-6, 500000.0, False,
    )  # fmt: skip
    model = OLMo(config, init_device="meta")
    assert model.num_params() == config.num_params()
    names = {n for n, _ in model.named_parameters()}
    assert {"blocks.0.q_norm.weight", "blocks.0.k_norm.weight", "final_norm.weight"} <= names


def test_flops_per_token_follows_the_mfu_convention() -> None:
    c = preset("olmo-1b")
    matmul = 16 * (4 * 2048**2 + 3 * 2048 * 8192) + 50304 * 2048
    assert c.num_flops_per_token(2048) == 6 * matmul + 12 * 16 * 2048 * 2048


def test_meta_init_allocates_nothing() -> None:
    model = OLMo(preset("olmo-7b"), init_device="meta")
    assert all(p.device == torch.device("meta") for p in model.parameters())


def test_committed_config_files_match_the_presets() -> None:
    from pathlib import Path

    folder = Path(__file__).parents[3] / "configs" / "models"
    files = sorted(folder.glob("*.yaml"))
    assert len(files) >= 6
    for path in files:
        assert TransformerConfig.load(path) == preset(path.stem), path.name
