"""Unsharded checkpoints: exact round trip, clear errors, no pickle, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import olmo_nn
from olmo_nn.checkpoint import load_checkpoint_config, save_checkpoint
from olmo_nn.checkpoint.integrity import write_manifest
from olmo_nn.cli.main import main
from olmo_nn.model import OLMo, TransformerConfig


def small(**changes: object) -> TransformerConfig:
    base = TransformerConfig(d_model=32, n_heads=2, n_layers=2, mlp_hidden_size=64,
                             vocab_size=100, embedding_size=128, eos_token_id=0, pad_token_id=1)  # fmt: skip
    return base.replace(**changes) if changes else base


@pytest.mark.parametrize("variant", ["tied", "untied", "olmo2"])
def test_round_trip_is_exact(tmp_path: Path, variant: str) -> None:
    config = {"tied": small(weight_tying=True), "untied": small(), "olmo2": small().as_olmo2()}[
        variant
    ]
    model = OLMo(config)
    path = save_checkpoint(model, tmp_path / "ckpt", config={"step": 7})
    names = sorted(p.name for p in path.iterdir())
    assert names == ["SHA256SUMS", "config.yaml", "model.safetensors"]
    loaded = olmo_nn.load_model(path)
    assert not loaded.training
    assert loaded.config == config
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    ids = torch.randint(0, 100, (2, 9))
    assert loaded(ids).shape == (2, 9, 128)
    assert torch.equal(loaded(ids), model.eval()(ids))
    _, full = load_checkpoint_config(path)
    assert full["step"] == 7


def test_wrong_shape_names_the_tensor(tmp_path: Path) -> None:
    path = save_checkpoint(OLMo(small()), tmp_path / "ckpt")
    tensors = load_file(str(path / "model.safetensors"))
    tensors["blocks.1.ff_out.weight"] = torch.zeros(32, 65)
    save_file(tensors, str(path / "model.safetensors"))
    write_manifest(path)  # edited and re-recorded: the content, not the record, is wrong
    with pytest.raises(
        ValueError,
        match=r"tensor 'blocks.1.ff_out.weight' has shape \(32, 65\) but the config implies \(32, 64\)",
    ):
        olmo_nn.load_model(path)


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    path = save_checkpoint(OLMo(small()), tmp_path / "ckpt")
    tensors = load_file(str(path / "model.safetensors"))
    del tensors["lm_head.weight"]
    save_file(tensors, str(path / "model.safetensors"))
    write_manifest(path)  # edited and re-recorded: the content, not the record, is wrong
    with pytest.raises(ValueError, match=r"missing tensors \['lm_head.weight'\]"):
        olmo_nn.load_model(path)


def test_unknown_config_key_is_named(tmp_path: Path) -> None:
    path = save_checkpoint(OLMo(small()), tmp_path / "ckpt")
    data = yaml.safe_load((path / "config.yaml").read_text())
    data["model"]["n_kv_heads"] = 2
    (path / "config.yaml").write_text(yaml.safe_dump(data))
    write_manifest(path)
    with pytest.raises(
        ValueError,
        match=r"unknown TransformerConfig key: model\.n_kv_heads \(did you mean model\.n_heads\?\)",
    ):
        olmo_nn.load_model(path)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        olmo_nn.load_model(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("model: {}\n")
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors is missing"):
        olmo_nn.load_model(tmp_path / "half")


def test_failed_save_leaves_no_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import olmo_nn.checkpoint.unsharded as unsharded

    def broken(*_args: object, **_kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(unsharded, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(OLMo(small()), tmp_path / "ckpt")
    assert list(tmp_path.iterdir()) == []


def test_cli_init_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiny"
    assert (
        main(
            ["model", "init", "--preset", "tiny", "n_layers=1", "--output", str(out), "--seed", "3"]
        )
        == 0
    )
    model = olmo_nn.load_model(out)
    assert model.config.n_layers == 1
    assert main(["model", "show", "--checkpoint", str(out)]) == 0
    # 1 block: 4·128² + 3·128·512 = 262,144; tied embedding 50304·128 = 6,438,912.
    assert "# parameters: 6,701,056 (non-embedding 262,144)" in capsys.readouterr().out
    assert main(["model", "init", "--preset", "tiny", "--output", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["model", "init", "--preset", "olmo-7b", "--dry-run"]) == 0
    assert "# parameters: 6,888,095,744" in capsys.readouterr().out
