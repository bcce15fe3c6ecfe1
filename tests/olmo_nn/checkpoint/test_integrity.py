"""Checkpoint integrity: every folder we write records its files' sha256, and loading checks it."""

from __future__ import annotations

from hashlib import sha256
from pathlib import Path

import pytest

import olmo_nn
from olmo_nn.checkpoint import save_checkpoint
from olmo_nn.checkpoint.integrity import CheckpointError, content_hash
from olmo_nn.cli.main import main
from olmo_nn.model import OLMo, TransformerConfig

SMALL = TransformerConfig(d_model=32, n_heads=2, n_layers=2, mlp_hidden_size=64, vocab_size=100,
                          embedding_size=128, eos_token_id=0, pad_token_id=1)  # fmt: skip


def flip_byte(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_saved_checkpoint_records_the_sha256_of_its_files(tmp_path: Path) -> None:
    path = save_checkpoint(OLMo(SMALL), tmp_path / "ckpt")
    lines = (path / "SHA256SUMS").read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == ["config.yaml", "model.safetensors"]
    assert all(len(line.split("  ")[0]) == 64 for line in lines)


def test_flipped_byte_in_the_weights_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = save_checkpoint(OLMo(SMALL), tmp_path / "ckpt")
    flip_byte(path / "model.safetensors")
    with pytest.raises(ValueError) as error:
        olmo_nn.load_model(path)
    assert str(error.value).startswith(
        f"{path / 'model.safetensors'}: its sha256 does not match the one recorded in "
        f"{path / 'SHA256SUMS'} when the checkpoint was written: the file is corrupted or was "
        "modified"
    )


def test_content_hash_is_the_sha256_of_the_record_after_checking_the_files(
    tmp_path: Path,
) -> None:
    path = save_checkpoint(OLMo(SMALL), tmp_path / "ckpt")
    record = (path / "SHA256SUMS").read_bytes()
    assert content_hash(path) == content_hash(path, verify=False) == sha256(record).hexdigest()
    (path / "tokenizer.json").write_text("{}")  # added afterwards: not part of the identity
    assert content_hash(path) == sha256(record).hexdigest()
    flip_byte(path / "model.safetensors")
    assert content_hash(path, verify=False) == sha256(record).hexdigest()  # the record only
    with pytest.raises(CheckpointError, match=r"model\.safetensors: its sha256 does not match"):
        content_hash(path)
    (path / "SHA256SUMS").unlink()
    with pytest.raises(CheckpointError, match="has no SHA256SUMS"):
        content_hash(path, verify=False)


def test_checkpoint_without_a_record_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(OLMo(SMALL), tmp_path / "ckpt")
    (path / "SHA256SUMS").unlink()
    with pytest.raises(ValueError, match="has no SHA256SUMS"):
        olmo_nn.load_model(path)


def test_truncated_safetensors_header_names_the_file(tmp_path: Path) -> None:
    from olmo_nn.checkpoint.integrity import write_manifest

    path = save_checkpoint(OLMo(SMALL), tmp_path / "ckpt")
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    write_manifest(path)  # recorded as it is now: only the header is wrong
    with pytest.raises(ValueError) as error:
        olmo_nn.load_model(path)
    assert str(error.value).startswith(
        f"{weights} is not a readable safetensors file (truncated or corrupted):"
    )


def test_model_init_and_the_cli_refuse_a_corrupted_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tiny"
    assert main(["model", "init", "--preset", "tiny", "n_layers=1", "--output", str(out)]) == 0
    assert (out / "SHA256SUMS").is_file()
    flip_byte(out / "config.yaml", offset=-3)
    capsys.readouterr()
    assert main(["model", "show", "--checkpoint", str(out)]) == 2
    assert f"{out / 'config.yaml'}: its sha256 does not match" in capsys.readouterr().err
