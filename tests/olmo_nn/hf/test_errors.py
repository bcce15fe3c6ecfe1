"""What export_hf / import_hf refuse, and that each refusal names the culprit."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from olmo_nn.checkpoint import save_checkpoint
from olmo_nn.checkpoint.integrity import write_manifest
from olmo_nn.cli.main import main
from olmo_nn.hf import export_hf, import_hf
from olmo_nn.model import OLMo, TransformerConfig

MakeCheckpoint = Callable[[TransformerConfig, str], tuple[OLMo, Path]]
SMALL = TransformerConfig(d_model=64, n_heads=4, n_layers=1, mlp_hidden_size=96)


@pytest.fixture(scope="module")
def pristine_hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    checkpoint = save_checkpoint(OLMo(SMALL), root / "checkpoint")
    return export_hf(checkpoint, root / "hf")


@pytest.fixture
def hf_folder(pristine_hf_folder: Path, tmp_path: Path) -> Path:
    """A valid exported OLMo 1 folder (untied) of this test's own, to corrupt."""
    return Path(shutil.copytree(pristine_hf_folder, tmp_path / "hf"))


def _edit_config(folder: Path, **changes: Any) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_llama_folder_is_refused_by_name(hf_folder: Path, tmp_path: Path) -> None:
    _edit_config(hf_folder, model_type="llama", architectures=["LlamaForCausalLM"])
    with pytest.raises(
        ValueError, match=r"LlamaForCausalLM.*supported.*OlmoForCausalLM.*Olmo2ForCausalLM"
    ):
        import_hf(hf_folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("attention_bias", True),
        ("num_key_value_heads", 2),
        ("rope_scaling", {"rope_type": "linear", "factor": 2.0}),
        ("rope_parameters", {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}),
        ("hidden_act", "gelu"),
    ],
)
def test_inexpressible_olmo_config_is_refused(
    hf_folder: Path, tmp_path: Path, field: str, value: Any
) -> None:
    _edit_config(hf_folder, **{field: value})
    with pytest.raises(ValueError, match=field):
        import_hf(hf_folder, tmp_path / "out")


def test_misshapen_hf_tensor_is_named(hf_folder: Path, tmp_path: Path) -> None:
    path = hf_folder / "model.safetensors"
    tensors = load_file(str(path))
    tensors["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(32, 64)
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(
        ValueError, match=r"model\.layers\.0\.self_attn\.q_proj\.weight.*\(32, 64\)"
    ):
        import_hf(hf_folder, tmp_path / "out")


def test_missing_hf_tensor_is_named(hf_folder: Path, tmp_path: Path) -> None:
    path = hf_folder / "model.safetensors"
    tensors = load_file(str(path))
    del tensors["lm_head.weight"]
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing tensors \['lm_head\.weight'\]"):
        import_hf(hf_folder, tmp_path / "out")


def test_misshapen_checkpoint_tensor_is_named(
    make_checkpoint: MakeCheckpoint, tmp_path: Path
) -> None:
    _, checkpoint = make_checkpoint(SMALL, "checkpoint")
    path = checkpoint / "model.safetensors"
    tensors = load_file(str(path))
    tensors["blocks.0.ff_out.weight"] = torch.zeros(64, 48)
    save_file(tensors, str(path), metadata={"format": "pt"})
    write_manifest(checkpoint)  # edited and re-recorded: the content, not the record, is wrong
    with pytest.raises(ValueError, match=r"blocks\.0\.ff_out\.weight"):
        export_hf(checkpoint, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_pickle_only_folder_is_refused(hf_folder: Path, tmp_path: Path) -> None:
    (hf_folder / "model.safetensors").rename(hf_folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin.*safetensors"):
        import_hf(hf_folder, tmp_path / "out")


def test_missing_config_json(hf_folder: Path, tmp_path: Path) -> None:
    (hf_folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        import_hf(hf_folder, tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        import_hf(tmp_path / "nowhere", tmp_path / "out")


def test_export_refuses_what_transformers_cannot_express(
    make_checkpoint: MakeCheckpoint, tmp_path: Path
) -> None:
    olmo2_clipped = SMALL.as_olmo2().replace(clip_qkv=8.0)
    _, checkpoint = make_checkpoint(olmo2_clipped, "olmo2")
    with pytest.raises(ValueError, match="clip_qkv"):
        export_hf(checkpoint, tmp_path / "hf")
    _, checkpoint = make_checkpoint(SMALL.replace(norm_eps=1e-6), "eps")
    with pytest.raises(ValueError, match="norm_eps"):
        export_hf(checkpoint, tmp_path / "hf")
    _, checkpoint = make_checkpoint(SMALL, "valid")
    with pytest.raises(ValueError, match="dtype='float8'"):
        export_hf(checkpoint, tmp_path / "hf", dtype="float8")
    assert not (tmp_path / "hf").exists()


def test_cli_reports_user_errors(
    hf_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit_config(hf_folder, model_type="llama", architectures=["LlamaForCausalLM"])
    assert main(["import-hf", str(hf_folder), str(tmp_path / "out")]) == 2
    assert "LlamaForCausalLM" in capsys.readouterr().err
    assert main(["export-hf", str(tmp_path / "missing"), str(tmp_path / "hf2")]) == 2
