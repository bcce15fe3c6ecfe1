"""Typed configs: unknown keys named, validation errors name the field, YAML round trip."""

from __future__ import annotations

import pytest

from olmo_nn.config import ConfigError
from olmo_nn.model import TransformerConfig, preset


def test_unknown_key_is_named_with_valid_keys() -> None:
    data = TransformerConfig.tiny().to_dict() | {"d_modle": 64}
    with pytest.raises(ConfigError) as error:
        TransformerConfig.from_dict(data)
    message = str(error.value)
    assert "d_modle" in message
    assert "valid keys are: d_model, n_heads, n_layers" in message


def test_validation_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"d_model=100 must be divisible by n_heads=3"):
        TransformerConfig(d_model=100, n_heads=3, n_layers=1)
    with pytest.raises(ConfigError, match=r"norm_type='batchnorm'"):
        TransformerConfig(d_model=64, n_heads=4, n_layers=1, norm_type="batchnorm")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"embedding_size=100 must be >= vocab_size=50280"):
        TransformerConfig(d_model=64, n_heads=4, n_layers=1, embedding_size=100)


def test_yaml_round_trip_and_overrides() -> None:
    config = preset("olmo-1b-olmo2")
    assert TransformerConfig.from_yaml(config.to_yaml()) == config
    changed = config.with_overrides(["n_layers=4", "rope_theta=1e4", "clip_qkv=8"])
    assert (changed.n_layers, changed.rope_theta, changed.clip_qkv) == (4, 10000.0, 8)
    with pytest.raises(ConfigError, match="unknown TransformerConfig key"):
        config.with_overrides(["n_layer=4"])
    with pytest.raises(ConfigError, match="must look like key=value"):
        config.with_overrides(["n_layers"])


def test_unknown_preset_lists_the_available_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown model preset 'olmo-3b'; available: tiny, olmo-60m"
    ):
        preset("olmo-3b")
