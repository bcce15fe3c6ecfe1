"""Integrity across the Hugging Face boundary: imports are recorded, damaged weights are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from olmo_nn.checkpoint import load_model, save_checkpoint
from olmo_nn.cli.main import main
from olmo_nn.hf import export_hf, import_hf
from olmo_nn.model import OLMo, TransformerConfig

SMALL = TransformerConfig(d_model=64, n_heads=4, n_layers=1, mlp_hidden_size=96)


@pytest.fixture
def hf_folder(tmp_path: Path) -> Path:
    checkpoint = save_checkpoint(OLMo(SMALL), tmp_path / "checkpoint")
    return export_hf(checkpoint, tmp_path / "hf")


def test_import_records_every_file_it_writes(hf_folder: Path, tmp_path: Path) -> None:
    out = import_hf(hf_folder, tmp_path / "out")
    listed = [line.split("  ")[1] for line in (out / "SHA256SUMS").read_text().splitlines()]
    written = sorted(p.name for p in out.iterdir() if p.name != "SHA256SUMS")
    assert listed == written
    assert "tokenizer.json" in listed
    load_model(out)


def test_truncated_hf_weights_are_named(
    hf_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = hf_folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    expected = f"{weights} is not a readable safetensors file (truncated or corrupted):"
    with pytest.raises(ValueError) as error:
        import_hf(hf_folder, tmp_path / "out")
    assert str(error.value).startswith(expected)
    capsys.readouterr()
    assert main(["eval", "downstream", "--model", f"hf:{hf_folder}", "--tasks", "copa",
                 "--limit", "2", "--output", str(tmp_path / "ds")]) == 2  # fmt: skip
    assert f"olmo eval: error: {expected}" in capsys.readouterr().err
