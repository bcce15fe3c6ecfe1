"""Corrupted or non-finite weights never give a score: the evaluation fails naming the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from olmo_nn.checkpoint import save_checkpoint
from olmo_nn.cli.main import main
from olmo_nn.model import OLMo, TransformerConfig

TINY = TransformerConfig(d_model=64, n_heads=2, n_layers=1, mlp_hidden_size=128)


def downstream(model: Path, out: Path) -> int:
    return main(["eval", "downstream", "--model", str(model), "--tasks", "copa", "--limit", "4",
                 "--output", str(out)])  # fmt: skip


def perplexity(model: Path, tmp_path: Path) -> int:
    data = tmp_path / "docs" / "web" / "a.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text(json.dumps({"id": "d0", "text": "A short document."}) + "\n")
    return main(["eval", "perplexity", "--model", str(model), "--data", str(data.parent),
                 "--output", str(tmp_path / "ppl")])  # fmt: skip


def test_flipped_byte_in_the_weights_fails_the_evaluation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = save_checkpoint(OLMo(TINY), tmp_path / "ckpt")
    weights = checkpoint / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x01
    weights.write_bytes(bytes(data))
    assert downstream(checkpoint, tmp_path / "ds") == 2
    assert f"olmo eval: error: {weights}: its sha256 does not match" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_non_finite_weights_give_no_score(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = OLMo(TINY)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    checkpoint = save_checkpoint(model, tmp_path / "nan")
    assert downstream(checkpoint, tmp_path / "ds") == 2
    assert (
        f"olmo eval: error: {checkpoint}: 8 of 8 log-likelihoods on task copa are not finite "
        "(NaN or infinite): its weights are corrupted or diverged; no accuracy is reported"
    ) in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()
    assert perplexity(checkpoint, tmp_path) == 2
    assert (
        f"olmo eval: error: {checkpoint}: the log-likelihood of 1 of 1 documents is not finite "
        "(NaN or infinite): its weights are corrupted or diverged; no perplexity is reported"
    ) in capsys.readouterr().err
    assert not (tmp_path / "ppl").exists()
