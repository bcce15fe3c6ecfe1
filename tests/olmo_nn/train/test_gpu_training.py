"""Training on a GPU: bf16 under FSDP2 on one rank against fp32, ``torch.compile`` against
eager, and a sharded checkpoint's save, load and resume on CUDA.

Each check is a function of the device, so that the GPU tests (``@pytest.mark.gpu``, run by
``benchmarks/gpu_check.sh``) and their CPU twins (a tinier model, run everywhere) share one
body: the twins keep the bodies working between the rare runs on a GPU.

The runs are the trainer with ``olmo train``'s callbacks on the committed sample shards (real
text), a few steps at a high learning rate, so that the loss moves and a difference shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from olmo_nn.model import TransformerConfig
from olmo_nn.train.callbacks.metrics_file import read_metrics
from olmo_nn.train.config import TrainConfig
from olmo_nn.train.data_order import DataConfig
from olmo_nn.train.optim import OptimConfig
from olmo_nn.train.run import default_callbacks
from olmo_nn.train.schedule import SchedulerConfig
from olmo_nn.train.trainer import Trainer

SAMPLE = Path(__file__).parents[3] / "data" / "sample" / "train"


@dataclass(frozen=True)
class Shape:
    d_model: int
    n_layers: int
    n_heads: int
    mlp_hidden_size: int
    seq: int
    micro_batch: int
    global_batch: int


#: head_dim 64 and bf16 on a GPU: the flash kernel's case; two micro-batches a step.
GPU_SHAPE = Shape(d_model=256, n_layers=4, n_heads=4, mlp_hidden_size=1024, seq=256,
                  micro_batch=4, global_batch=8)  # fmt: skip
CPU_SHAPE = Shape(d_model=64, n_layers=2, n_heads=2, mlp_hidden_size=128, seq=32,
                  micro_batch=1, global_batch=2)  # fmt: skip
STEPS = 6


def shape_for(device: str) -> Shape:
    return GPU_SHAPE if device == "cuda" else CPU_SHAPE


def train_config(device: str, *, precision: str, fsdp: bool, compile: bool = False) -> TrainConfig:
    """A small run on the sample shards (OLMo's vocabulary), at a constant LR of 1e-2 after one
    warm-up step."""
    shape = shape_for(device)
    model = TransformerConfig(
        d_model=shape.d_model, n_layers=shape.n_layers, n_heads=shape.n_heads,
        mlp_hidden_size=shape.mlp_hidden_size, max_sequence_length=shape.seq,
    )  # fmt: skip
    return TrainConfig(
        run_name="gpu-check",
        model=model,
        data=DataConfig(paths=[str(SAMPLE)], sequence_length=shape.seq),
        optim=OptimConfig(lr=1e-2),
        scheduler=SchedulerConfig(name="constant", warmup_steps=1),
        global_batch_size=shape.global_batch,
        micro_batch_size=shape.micro_batch,
        max_steps=STEPS,
        save_interval=3,
        log_interval=1,
        mlflow=False,
        device=device,
        precision=precision,  # type: ignore[arg-type]
        fsdp=fsdp,
        compile=compile,
    )


def train(
    config: TrainConfig, run_dir: Path, *, stop_at: int | None = None
) -> tuple[list[dict[str, Any]], Trainer]:
    """Run (or resume) ``config`` in ``run_dir`` with ``olmo train``'s callbacks; its
    ``metrics.jsonl`` records and the trainer."""
    trainer = Trainer(config, run_dir, callbacks=default_callbacks(config), stop_at=stop_at)
    try:
        trainer.fit()
    finally:
        if dist.is_initialized():  # a one-rank group for FSDP: the next run makes its own
            dist.destroy_process_group()
    return read_metrics(run_dir), trainer


def column(records: list[dict[str, Any]], key: str) -> torch.Tensor:
    return torch.tensor([float(record[key]) for record in records], dtype=torch.float64)


def assert_close_runs(
    ours: list[dict[str, Any]], reference: list[dict[str, Any]], *, loss_rtol: float,
    first_grad_rtol: float,
) -> None:  # fmt: skip
    """The same steps and data; each step's loss within ``loss_rtol`` of the reference's; the
    first step's gradient norm (before any update: the same weights and batch) within
    ``first_grad_rtol``."""
    assert [r["step"] for r in ours] == [r["step"] for r in reference] == list(range(1, STEPS + 1))
    assert [r["batch_fingerprint"] for r in ours] == [r["batch_fingerprint"] for r in reference]
    torch.testing.assert_close(column(ours, "loss"), column(reference, "loss"), rtol=loss_rtol,
                               atol=0.0)  # fmt: skip
    torch.testing.assert_close(column(ours[:1], "grad_norm"), column(reference[:1], "grad_norm"),
                               rtol=first_grad_rtol, atol=0.0)  # fmt: skip


# ------------------------------------------------------------------ the checks
def check_bf16_fsdp_matches_fp32(tmp_path: Path, device: str) -> tuple[Trainer, Trainer]:
    """bf16 with FSDP2 (one rank) against plain fp32: losses within 2% at every step."""
    fp32, fp32_trainer = train(train_config(device, precision="fp32", fsdp=False),
                               tmp_path / "fp32")  # fmt: skip
    bf16, bf16_trainer = train(train_config(device, precision="bf16", fsdp=True),
                               tmp_path / "bf16")  # fmt: skip
    losses = column(fp32, "loss")
    assert losses[-1] < losses[0] - 0.5, losses  # it trains: a difference would show
    assert_close_runs(bf16, fp32, loss_rtol=2e-2, first_grad_rtol=5e-2)
    return bf16_trainer, fp32_trainer


def check_compiled_matches_eager(tmp_path: Path, device: str) -> None:
    """``compile=true`` (each block compiled) against eager, both bf16 under FSDP2."""
    eager, _ = train(train_config(device, precision="bf16", fsdp=True), tmp_path / "eager")
    compiled, _ = train(train_config(device, precision="bf16", fsdp=True, compile=True),
                        tmp_path / "compiled")  # fmt: skip
    assert_close_runs(compiled, eager, loss_rtol=1e-2, first_grad_rtol=2e-2)


def resume_config(device: str) -> TrainConfig:
    return train_config(device, precision="bf16" if device == "cuda" else "fp32", fsdp=True)


def check_resume_continues_the_run(
    tmp_path: Path, device: str, *, rtol: float, whole: list[dict[str, Any]] | None = None
) -> None:
    """Stopped after step 3 and resumed from its sharded checkpoint, a run logs the same data
    and losses (within ``rtol``; 0 on the CPU) as the uninterrupted one (``whole``: its
    records, when they were taken already)."""
    config = resume_config(device)
    if whole is None:
        whole, _ = train(config, tmp_path / "whole")
    first, stopped = train(config, tmp_path / "resumed", stop_at=3)
    assert [r["step"] for r in first] == [1, 2, 3]
    assert stopped.last_checkpoint is not None and stopped.last_checkpoint.name == "step000003"
    resumed, trainer = train(config, tmp_path / "resumed")
    assert trainer.step == STEPS and trainer.tokens_seen == STEPS * config.global_batch_size * (
        config.sequence_length
    )
    assert [r["tokens_seen"] for r in resumed] == [r["tokens_seen"] for r in whole]
    assert [r["batch_fingerprint"] for r in resumed] == [r["batch_fingerprint"] for r in whole]
    torch.testing.assert_close(column(resumed, "loss"), column(whole, "loss"), rtol=rtol, atol=0.0)
    torch.testing.assert_close(column(resumed, "grad_norm"), column(whole, "grad_norm"),
                               rtol=rtol * 5, atol=0.0)  # fmt: skip


# ------------------------------------------------------------------ on a GPU
@pytest.mark.gpu
def test_bf16_fsdp_on_one_rank_matches_fp32_on_cuda(tmp_path: Path) -> None:
    from torch.distributed.fsdp import FSDPModule

    bf16, fp32 = check_bf16_fsdp_matches_fp32(tmp_path, "cuda")
    assert isinstance(bf16.model, FSDPModule), "fsdp=true on one GPU should shard with FSDP2"
    assert not isinstance(fp32.model, FSDPModule)
    # fp32 master weights under bf16 compute.
    assert {p.dtype for p in bf16.model.parameters()} == {torch.float32}
    assert next(bf16.model.parameters()).device.type == "cuda"


@pytest.mark.gpu
def test_compiled_training_matches_eager_on_cuda(tmp_path: Path) -> None:
    check_compiled_matches_eager(tmp_path, "cuda")


@pytest.mark.gpu
def test_checkpoint_resume_on_cuda(tmp_path: Path) -> None:
    # Not bit for bit: CUDA's backward kernels (embedding gradients, attention) accumulate in
    # an order that varies from run to run. A resume that lost the optimizer's moments or the
    # data position moves the losses far more than this.
    check_resume_continues_the_run(tmp_path, "cuda", rtol=2e-3)


# ------------------------------------------------------------------ their CPU twins
def test_bf16_fsdp_check_runs_on_cpu(tmp_path: Path) -> None:
    check_bf16_fsdp_matches_fp32(tmp_path, "cpu")


@pytest.fixture(scope="module")
def cpu_whole_run(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The uninterrupted CPU run both resume tests compare with."""
    records, _ = train(resume_config("cpu"), tmp_path_factory.mktemp("whole") / "run")
    return records


def test_resume_check_runs_on_cpu_bit_for_bit(
    tmp_path: Path, cpu_whole_run: list[dict[str, Any]]
) -> None:
    check_resume_continues_the_run(tmp_path, "cpu", rtol=0.0, whole=cpu_whole_run)


def test_a_broken_resume_fails_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_whole_run: list[dict[str, Any]]
) -> None:
    """The resume check can fail: a resume that drops the optimizer's state is caught."""
    original = Trainer.load_state_dict

    def forget_optimizer(self: Trainer, state: dict[str, Any]) -> None:
        original(self, state)
        self.optimizer.state.clear()

    monkeypatch.setattr(Trainer, "load_state_dict", forget_optimizer)
    with pytest.raises(AssertionError, match="Tensor-likes are not close"):
        check_resume_continues_the_run(tmp_path, "cpu", rtol=2e-3, whole=cpu_whole_run)
