"""export_hf / import_hf folders: roundtrip, tokenizer files, dtype, overwrite, the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from olmo_nn.checkpoint import load_checkpoint_config, load_model
from olmo_nn.cli.main import main
from olmo_nn.hf import export_hf, import_hf
from olmo_nn.model import OLMo, TransformerConfig
from olmo_nn.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")

MakeCheckpoint = Callable[[TransformerConfig, str], tuple[OLMo, Path]]
SAMPLE = (
    "Hello   world! Café naïve — 日本語 |||EMAIL_ADDRESS||| def f(x):\n    return x<|endoftext|>"
)


def test_export_then_import_is_bit_identical(
    variant: str, make_checkpoint: MakeCheckpoint, variant_config: TransformerConfig, tmp_path: Path
) -> None:
    _, checkpoint = make_checkpoint(variant_config, "checkpoint")
    export_hf(checkpoint, tmp_path / "hf")
    back = import_hf(tmp_path / "hf", tmp_path / "back")
    before = load_file(str(checkpoint / "model.safetensors"))
    after = load_file(str(back / "model.safetensors"))
    assert sorted(before) == sorted(after)
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype
        assert torch.equal(after[name], tensor), name
    # OLMo's tokenizer went out with the export and came back, so vocab_size survives too.
    restored, full = load_checkpoint_config(back)
    assert restored == variant_config
    assert (back / "tokenizer.json").is_file()
    assert full["imported_from"]["path"] == str((tmp_path / "hf").resolve())
    assert full["imported_from"]["weights"] == ["model.safetensors"]


def test_folder_layout_and_config(make_checkpoint: MakeCheckpoint, tmp_path: Path) -> None:
    config = TransformerConfig(
        d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=96, weight_tying=True
    )
    _, checkpoint = make_checkpoint(config, "checkpoint")
    out = export_hf(checkpoint, tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    hf_config = json.loads((out / "config.json").read_text())
    assert hf_config["model_type"] == "olmo"
    assert hf_config["architectures"] == ["OlmoForCausalLM"]
    assert (hf_config["vocab_size"], hf_config["intermediate_size"]) == (50304, 96)
    assert (hf_config["eos_token_id"], hf_config["pad_token_id"]) == (50279, 1)
    assert hf_config["rope_parameters"] == {"rope_type": "default", "rope_theta": 10000.0}
    assert hf_config["dtype"] == "float32"
    tensors = load_file(str(out / "model.safetensors"))
    assert "lm_head.weight" not in tensors  # tied: transformers ties it to the embedding
    assert tensors["model.layers.1.mlp.gate_proj.weight"].shape == (96, 64)
    # No other process in this checkout writes under tmp_path: nothing is left half-written.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "hf"]


def test_auto_tokenizer_matches_ours(make_checkpoint: MakeCheckpoint, tmp_path: Path) -> None:
    config = TransformerConfig(d_model=64, n_heads=4, n_layers=1, mlp_hidden_size=96)
    _, checkpoint = make_checkpoint(config, "checkpoint")
    out = export_hf(checkpoint, tmp_path / "hf")
    theirs = transformers.AutoTokenizer.from_pretrained(out)
    ours = Tokenizer.from_name_or_path()
    assert theirs(SAMPLE)["input_ids"] == ours.encode(SAMPLE)
    assert (theirs.eos_token, theirs.pad_token) == ("<|endoftext|>", "<|padding|>")
    assert (theirs.eos_token_id, theirs.pad_token_id) == (50279, 1)


def test_no_matching_tokenizer_is_a_warning(
    make_checkpoint: MakeCheckpoint, tmp_path: Path
) -> None:
    config = TransformerConfig(
        d_model=64, n_heads=4, n_layers=1, mlp_hidden_size=96,
        vocab_size=384, embedding_size=None, eos_token_id=383,
    )  # fmt: skip
    _, checkpoint = make_checkpoint(config, "checkpoint")
    with pytest.warns(UserWarning, match="no tokenizer files"):
        out = export_hf(checkpoint, tmp_path / "hf")
    assert not (out / "tokenizer.json").exists()
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 384
    with pytest.raises(ValueError, match="embedding rows"):
        export_hf(checkpoint, tmp_path / "hf2", tokenizer="olmo")


def test_bfloat16_export(make_checkpoint: MakeCheckpoint, tmp_path: Path) -> None:
    config = TransformerConfig(d_model=64, n_heads=4, n_layers=1, mlp_hidden_size=96).as_olmo2()
    model, checkpoint = make_checkpoint(config, "checkpoint")
    out = export_hf(checkpoint, tmp_path / "hf", dtype="bfloat16")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    tensors = load_file(str(out / "model.safetensors"))
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    expected = model.state_dict()["blocks.0.q_norm.weight"].to(torch.bfloat16)
    assert torch.equal(tensors["model.layers.0.self_attn.q_norm.weight"], expected)


def test_refuses_to_overwrite(make_checkpoint: MakeCheckpoint, tmp_path: Path) -> None:
    config = TransformerConfig(d_model=64, n_heads=4, n_layers=1, mlp_hidden_size=96)
    _, checkpoint = make_checkpoint(config, "checkpoint")
    out = tmp_path / "hf"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_hf(checkpoint, out)
    assert (out / "notes.txt").read_text() == "keep me"
    export_hf(checkpoint, out, overwrite=True)
    assert not (out / "notes.txt").exists()
    assert (out / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="its own input"):
        export_hf(checkpoint, checkpoint, overwrite=True)


def test_sharded_import(
    randomize_parameters: Callable[[torch.nn.Module, int], None], tmp_path: Path
) -> None:
    config = transformers.OlmoConfig(
        vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, eos_token_id=255, pad_token_id=1,
    )  # fmt: skip
    hf_model = transformers.OlmoForCausalLM(config).eval()
    randomize_parameters(hf_model, 7)
    hf_model.save_pretrained(tmp_path / "hf", max_shard_size="40KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    model = load_model(import_hf(tmp_path / "hf", tmp_path / "checkpoint"))
    ids = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float((model(ids) - hf_model(ids).logits).abs().max()) < 1e-4


def test_cli_export_and_import(
    make_checkpoint: MakeCheckpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = TransformerConfig(d_model=64, n_heads=4, n_layers=1, mlp_hidden_size=96)
    _, checkpoint = make_checkpoint(config, "checkpoint")
    out = tmp_path / "hf"
    assert (
        main(["export-hf", str(checkpoint), str(out), "--dtype", "float32", "--tokenizer", "olmo"])
        == 0
    )
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert (
        main(["export-hf", str(checkpoint), str(out)]) == 2
    )  # exists: refused without a traceback
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export-hf", str(checkpoint), str(out), "--overwrite"]) == 0
    assert main(["import-hf", str(out), str(tmp_path / "back")]) == 0
    assert (tmp_path / "back" / "model.safetensors").is_file()
