"""The trainer reads the device back once per flush: the sync budget, metrics that do not
depend on ``log_interval``, skipping and non-finite steps decided on the device, stop requests
and tokens/s over the whole interval."""

from __future__ import annotations

import json
import math
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode

from olmo_nn.train.callbacks.base import Callback
from olmo_nn.train.callbacks.metrics_file import read_metrics
from olmo_nn.train.config import TrainConfig
from olmo_nn.train.loader import StepBatch
from olmo_nn.train.run import default_callbacks
from olmo_nn.train.trainer import NonFiniteLossError, Trainer

REPO = Path(__file__).parents[3]
SAMPLE = REPO / "data" / "sample"
TIMING = {"tokens_per_s", "mfu"}  # the only metrics that may differ between two runs


def config(**changes: Any) -> TrainConfig:
    """8 steps of a narrow model on the sample shards, a flush every 3 steps, no checkpoint
    or evaluation before the end unless ``changes`` ask for one (``a__b=1`` sets a.b)."""
    tree = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    tree["model"].update(d_model=32, n_heads=2, mlp_hidden_size=64, max_sequence_length=64)
    tree["data"].update(
        paths=[str(SAMPLE / "train")],
        sequence_length=64,
        validation_paths=[str(SAMPLE / "validation")],
    )
    tree.update(
        global_batch_size=4, micro_batch_size=2, max_steps=8, save_interval=1000,
        save_interval_unsharded=None, log_interval=3, mlflow=False, device="cpu",
        eval={"interval": 0, "max_batches": 2, "downstream_tasks": []},
    )  # fmt: skip
    tree["scheduler"].update(warmup_steps=2)
    for dotted, value in changes.items():
        node = tree
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return TrainConfig.from_dict(tree)


def trainer_for(train_config: TrainConfig, run_dir: Path, *extra: Callback) -> Trainer:
    """A trainer with ``olmo train``'s callbacks (plus ``extra``)."""
    return Trainer(train_config, run_dir, callbacks=[*default_callbacks(train_config), *extra])


def rows(run_dir: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if k not in TIMING} for m in read_metrics(run_dir)]


class HostReads(TorchDispatchMode):
    """Records every read of a tensor's values by the host, with the trainer's step, while
    ``on``: ``item()``, ``bool()``, ``float()``, ``int()`` (all dispatch
    ``aten._local_scalar_dense``) and ``tolist()``, ``numpy()``, ``cpu()`` (patched: on a CPU
    tensor they dispatch nothing), on the training loop's thread."""

    def __init__(self, trainer: Trainer, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__()
        self.trainer = trainer
        self.on = False
        self.reads: list[tuple[str, int]] = []
        for name in ("tolist", "numpy", "cpu"):
            monkeypatch.setattr(torch.Tensor, name, self._recording(name))

    def _recording(self, name: str) -> Any:
        real = getattr(torch.Tensor, name)

        def read(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            # A checkpoint written in the background reads tensors on its own thread.
            if self.on and threading.current_thread() is threading.main_thread():
                self.reads.append((name, self.trainer.step))
            return real(tensor, *args, **kwargs)

        return read

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.on and func is torch.ops.aten._local_scalar_dense.default:
            self.reads.append(("item", self.trainer.step))
        return func(*args, **(kwargs or {}))


class CountFromTrainStart(Callback):
    """Turns ``reads`` on once training starts, off when it ends."""

    def __init__(self) -> None:
        self.reads: HostReads | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        assert self.reads is not None
        self.reads.on = True

    def on_train_end(self, trainer: Trainer) -> None:
        assert self.reads is not None
        self.reads.on = False


def fit_counting_reads(
    trainer: Trainer, switch: CountFromTrainStart, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[str, int]]:
    """Train, recording the host's reads of tensors outside checkpoint saves (DCP reads every
    tensor it writes: not the loop's business)."""
    reads = HostReads(trainer, monkeypatch)
    switch.reads = reads
    real_save = trainer.save

    def save_uncounted(*, unsharded: bool) -> Path:
        reads.on = False
        try:
            return real_save(unsharded=unsharded)
        finally:
            reads.on = True

    monkeypatch.setattr(trainer, "save", save_uncounted)
    with reads:
        trainer.fit()
    return reads.reads


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        # A flush every 3 steps and at the last: one transfer each, nothing else.
        ({}, [("tolist", 3), ("tolist", 6), ("tolist", 8)]),
        # Evaluation every 4 steps and a checkpoint at 5 flush there too; the evaluation
        # reads its own loss back (one item()).
        (
            {"eval": {"interval": 4, "max_batches": 2, "downstream_tasks": []}, "save_interval": 5},
            [
                ("tolist", 3),
                ("tolist", 4),
                ("item", 4),
                ("tolist", 5),
                ("tolist", 6),
                ("tolist", 8),
                ("item", 8),
            ],
        ),
    ],
)
def test_the_host_reads_the_device_once_per_flush(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    changes: dict[str, Any],
    expected: list[tuple[str, int]],
) -> None:
    switch = CountFromTrainStart()
    trainer = trainer_for(config(**changes), tmp_path / "run", switch)
    assert fit_counting_reads(trainer, switch, monkeypatch) == expected
    metrics = read_metrics(tmp_path / "run")
    assert [m["step"] for m in metrics] == list(range(1, 9))  # still one row per step
    evaluated = [m["step"] for m in metrics if "eval/loss" in m]
    assert evaluated == ([4, 8] if changes else [])


def test_the_old_per_step_reads_would_fail_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counter sees a read the loop makes: one ``.item()`` per step, as before."""
    switch = CountFromTrainStart()
    trainer = trainer_for(config(max_steps=3), tmp_path / "run", switch)
    real_step = trainer.train_step

    def step_reading_the_loss(batch: StepBatch) -> dict[str, Any]:
        metrics = real_step(batch)
        metrics["loss"].item()
        return metrics

    monkeypatch.setattr(trainer, "train_step", step_reading_the_loss)
    reads = fit_counting_reads(trainer, switch, monkeypatch)
    assert reads == [("item", 1), ("item", 2), ("item", 3), ("tolist", 3)]


class FloatReference:
    """Step skipping as the trainer decided it on Python floats (math.fsum statistics)."""

    def __init__(self, window: int, sigma: float) -> None:
        self.window, self.sigma, self.values = window, sigma, list[float]()

    def is_outlier(self, value: float) -> bool:
        if not math.isfinite(value):
            return True
        if len(self.values) < min(20, self.window):
            return False
        mean = math.fsum(self.values) / len(self.values)
        variance = math.fsum((v - mean) ** 2 for v in self.values) / (len(self.values) - 1)
        return abs(value - mean) > self.sigma * math.sqrt(variance)

    def update(self, value: float) -> None:
        self.values = [*self.values, value][-self.window :]


def nan_gradients_at(trainer: Trainer, step: int) -> None:
    """Make every gradient of ``step``'s backward NaN (the loss stays finite)."""
    for param in trainer.model.parameters():
        param.register_hook(lambda grad: grad * math.nan if trainer.step == step - 1 else grad)


def test_metrics_and_skips_do_not_depend_on_the_log_interval(tmp_path: Path) -> None:
    # A 4-step window and 0.5 sigma flag about half the steps from step 5 on; step 6's
    # gradients are NaN. The decisions must be the float reference's, at any log_interval.
    skip_step = {"enabled": True, "sigma": 0.5, "window": 4}
    runs = {}
    for log_interval in (1, 3):
        trainer = trainer_for(
            config(log_interval=log_interval, skip_step=skip_step),
            tmp_path / f"every{log_interval}",
        )
        nan_gradients_at(trainer, 6)
        trainer.fit()
        runs[log_interval] = rows(tmp_path / f"every{log_interval}")
    assert runs[3] == runs[1]  # bit for bit, apart from the timing
    metrics = runs[1]
    losses, norms = FloatReference(4, 0.5), FloatReference(4, 0.5)
    expected = []
    for m in metrics:
        loss, norm = float(m["loss"]), float(m["grad_norm"])  # "nan" is a string in JSON
        expected.append(losses.is_outlier(loss) or norms.is_outlier(norm))
        if math.isfinite(loss) and math.isfinite(norm):
            losses.update(loss)
            norms.update(norm)
    skipped = [bool(m.get("skipped")) for m in metrics]
    assert skipped == expected
    assert skipped[5] and metrics[5]["grad_norm"] == "nan"  # metrics.jsonl spells NaN out
    assert 1 < sum(skipped) < 7  # finite outliers skipped too, and steps taken
    assert trainer.skipper.state_dict() == {"values": losses.values}  # what checkpoints hold


def test_a_non_finite_step_is_never_applied_and_raises_at_the_next_flush(
    tmp_path: Path,
) -> None:
    # Flushes at 3 (a checkpoint), 4 and 6 (a checkpoint): step 5's NaN gradients are found
    # at 6, before its checkpoint is written.
    run = tmp_path / "run"
    trainer = trainer_for(config(log_interval=4, save_interval=3), run)
    nan_gradients_at(trainer, 5)
    with pytest.raises(NonFiniteLossError) as raised:
        trainer.fit()
    message = str(raised.value)
    assert message.startswith("step 5: loss ") and " / grad norm nan is not finite; " in message
    assert f"the last good checkpoint is {run / 'checkpoints' / 'step000003'} (" in message
    assert "Lower the LR, enable z_loss or skip_step.enabled=true, and resume." in message
    assert trainer.step == 6  # it trained on to the flush...
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step000003"]  # ...not 6
    assert [m["step"] for m in read_metrics(run)] == [1, 2, 3, 4]  # the steps before it
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())  # 5 not applied


def test_a_non_finite_step_names_the_checkpoint_still_being_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slow disk: step 3's background save is not done by the flush at 6 that finds step
    # 5's NaN. The run lets it complete before it stops, so that is the one to resume from.
    from olmo_nn.train.async_checkpointing import AsyncCheckpointer

    monkeypatch.setattr(AsyncCheckpointer, "poll", lambda self: None)
    run = tmp_path / "run"
    trainer = trainer_for(config(log_interval=4, save_interval=3), run)
    nan_gradients_at(trainer, 5)
    with pytest.raises(NonFiniteLossError) as raised:
        trainer.fit()
    step3 = run / "checkpoints" / "step000003"
    message = str(raised.value)
    assert f"the last good checkpoint is {step3}, whose save in flight completes before" in message
    assert trainer.last_checkpoint == step3 and (step3 / "SHA256SUMS").is_file()


def test_a_stop_request_is_honoured_at_the_next_flush(tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer = trainer_for(config(), run)
    real_step = trainer.train_step

    def step_then_ask_to_stop(batch: StepBatch) -> dict[str, Any]:
        metrics = real_step(batch)
        if trainer.step == 4:
            (run / "stop-request").touch()
        return metrics

    trainer.train_step = step_then_ask_to_stop  # type: ignore[method-assign]
    trainer.fit()
    assert trainer.stopped_on_request == 6  # asked after step 4; flushes at 3, 6, 8
    assert json.loads((run / "stopped.json").read_text())["step"] == 6
    assert [m["step"] for m in read_metrics(run)] == list(range(1, 7))


class Clock:
    """``time.perf_counter`` with hours added on request: a slow callback, in no time."""

    def __init__(self) -> None:
        self.real = time.perf_counter
        self.added = 0.0

    def __call__(self) -> float:
        return self.real() + self.added


class SlowAt(Callback):
    """Takes ``seconds`` (of ``clock``) in ``on_step_end`` of ``step``."""

    def __init__(self, step: int, seconds: float, clock: Clock) -> None:
        self.step, self.seconds, self.clock = step, seconds, clock

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if metrics["step"] == self.step:
            self.clock.added += self.seconds


def test_tokens_per_s_covers_the_whole_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An hour in a callback at the flush after step 3 counts in steps 4-6's figure only."""
    clock = Clock()
    monkeypatch.setattr(time, "perf_counter", clock)
    trainer_for(config(), tmp_path / "run", SlowAt(3, 3600.0, clock)).fit()
    metrics = read_metrics(tmp_path / "run")
    rates = [m["tokens_per_s"] for m in metrics]
    assert len(set(rates[0:3])) == len(set(rates[3:6])) == len(set(rates[6:8])) == 1
    slow = 3 * 4 * 64 / 3600.0  # steps 4-6 (4 instances of 64 tokens each) over the hour
    assert slow * 0.99 < rates[3] <= slow  # the hour, and the steps' own (real) seconds
    assert rates[0] > 100 * slow and rates[6] > 100 * slow  # the others took seconds
    assert all(m["mfu"] is None for m in metrics)  # no peak FLOP/s known for a CPU


@contextmanager
def cuda_sync_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Warnings for every synchronizing CUDA call made inside (torch's sync debug mode)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield caught
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
def test_a_training_step_never_waits_for_the_gpu(tmp_path: Path) -> None:
    """On CUDA (bf16), a step after the first (lazy initialization) makes no synchronizing
    call: no item(), no nonzero, no blocking copy back."""
    trainer = trainer_for(
        config(device="cuda", precision="bf16", skip_step={"enabled": True, "window": 4}),
        tmp_path / "run",
    )
    real_step = trainer.train_step
    syncs: list[str] = []

    def watched_step(batch: StepBatch) -> dict[str, Any]:
        if batch.step == 1:
            return real_step(batch)
        with cuda_sync_warnings() as caught:
            metrics = real_step(batch)
        syncs.extend(f"step {batch.step}: {w.message}" for w in caught if "sync" in str(w.message))
        return metrics

    trainer.train_step = watched_step  # type: ignore[method-assign]
    try:
        trainer.fit()
    finally:
        if torch.distributed.is_initialized():  # FSDP's one-rank group: the next run makes its own
            torch.distributed.destroy_process_group()
    assert syncs == []
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == list(range(1, 9))
