"""The training loop: OLMo's recipe, one step after another, resumable at any step.

Everything that must survive a restart (model, optimizer, step, tokens seen, the data position,
RNG and the step-skipping detector) goes through :meth:`Trainer.state_dict` into each
checkpoint; the data order and the schedule are pure functions of those, so a resumed run
reproduces the uninterrupted one bit for bit on CPU.

A run holds its directory exclusively (:mod:`olmo_nn.train.lock`). It resumes from the newest
intact checkpoint, skipping damaged ones, and first writes an interval's unsharded checkpoint
that an interruption between the two saves left missing. Rank 0 alone takes the lock and
chooses the checkpoint; when that fails, every rank raises its error (:func:`on_main_rank`).

Sharded checkpoints are written in the background while training goes on (``async_checkpoint``,
:mod:`olmo_nn.train.async_checkpointing`), one at a time: every other save, the end of the run,
a stop request and an exception first wait for the one in flight; the step after it is in
place fires ``on_checkpoint``, or raises its error (a full disk, say).

A step never waits for the device: its loss, z-loss, grad norm and skip decision stay device
tensors, and the optimizer skips a step on the device (:func:`~olmo_nn.train.optim.step_unless`).
The host reads them back in one transfer per *flush*: every ``log_interval`` steps, at each
checkpoint and in-loop evaluation step, and at the last step (:meth:`Trainer._fit`). Only
then do the callbacks get the steps' metrics, a non-finite loss stop the run, and a stop
request (:mod:`olmo_nn.train.stop`) get looked for: the run then saves and stops.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import yaml

from olmo_nn.checkpoint.unsharded import (
    check_tensor_shapes,
    load_checkpoint_config,
    open_safetensors,
    verify_weights,
)
from olmo_nn.model.transformer import OLMo
from olmo_nn.parallel import (
    DistributedContext,
    apply_activation_checkpointing,
    apply_compile,
    apply_fsdp,
    copy_into_shard,
    describe_attention,
    init_distributed,
    join_one_rank_group,
)
from olmo_nn.train.async_checkpointing import AsyncCheckpointer
from olmo_nn.train.batch import BatchSchedule
from olmo_nn.train.callbacks.base import Callback
from olmo_nn.train.checkpointing import (
    checkpoint_dir,
    load_sharded,
    remove_staging_folders,
    resume_checkpoint,
    rng_state,
    save_sharded,
    save_unsharded,
    set_rng_state,
)
from olmo_nn.train.config import HARDWARE_FIELDS, TrainConfig, math_of
from olmo_nn.train.data_order import DataOrder, InstanceSpace
from olmo_nn.train.loader import BatchLoader, StepBatch
from olmo_nn.train.lock import run_directory_lock
from olmo_nn.train.optim import build_optimizer, step_unless
from olmo_nn.train.schedule import lr_at, set_lr
from olmo_nn.train.stability import OutlierDetector, clip_grad_norm, clip_threshold
from olmo_nn.train.stop import STOP_REQUEST_FILE, mark_stopped, stop_requested

__all__ = ["NonFiniteLossError", "Trainer", "on_main_rank"]

_T = TypeVar("_T")

#: Dense (no sparsity) bf16 tensor-core peak of the accelerators we know, for MFU, from
#: NVIDIA's H100/H200 and A100 datasheets (which list twice these figures with sparsity).
_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


class NonFiniteLossError(RuntimeError):
    """The loss or grad norm became NaN or infinite and step skipping is off.

    Raised at the flush after that step (see :meth:`Trainer._fit`); the step's update was not
    applied and no checkpoint was written after it."""


def on_main_rank(ctx: DistributedContext, work: Callable[[], _T]) -> _T:
    """``work()`` on rank 0, its result handed to every rank; if it raises, every rank raises
    the same error (its type and message; a RuntimeError where that type cannot be rebuilt)
    rather than waiting for rank 0 in a collective."""
    result: Any = None
    failure: Exception | None = None
    if ctx.is_main:
        try:
            result = work()
        except Exception as error:
            failure = error
    if ctx.initialized and ctx.world_size > 1:
        sent = [result, *((type(failure), str(failure)) if failure else (None, None))]
        dist.broadcast_object_list(sent, src=0)
        result, kind, message = sent
        if kind is not None and not ctx.is_main:
            try:
                failure = kind(message)
            except Exception:
                failure = RuntimeError(message)
    if failure is not None:
        raise failure
    return result


def _peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in _PEAK_FLOPS.items() if key in name), None)


class Trainer:
    """Build with a resolved config and a run directory; :meth:`fit` trains (or resumes)."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        *,
        callbacks: list[Callback] | None = None,
        stop_at: int | None = None,
        ctx: DistributedContext | None = None,
    ) -> None:
        self.config = config.resolved()
        self.run_dir = Path(run_dir)
        self.callbacks = callbacks or []
        self.stop_at = stop_at
        self.stopped_on_request: int | None = None
        """The step after which a stop request (:mod:`olmo_nn.train.stop`) ended the run."""
        self.ctx = ctx or init_distributed(self.config.device)
        self.step = 0
        self.tokens_seen = 0
        self.instances_consumed = 0
        self.skipper: OutlierDetector = self.config.skip_step.build(self.ctx.device)
        """The loss's outlier detector (its window on the device)."""
        self.grad_norm_skipper: OutlierDetector = self.config.skip_step.build(self.ctx.device)
        """The grad norm's outlier detector."""
        self.sequence_length = self.config.sequence_length
        self.data = InstanceSpace(self.config.data.paths, self.sequence_length)
        self.data.check_vocab(self.config.model.vocab_size)
        self.order = DataOrder.for_space(self.data, self.config.data.seed)
        warmup = self.config.batch_size_warmup
        self.schedule = BatchSchedule(
            global_batch_size=self.config.global_batch_size,
            sequence_length=self.sequence_length,
            warmup_start_instances=warmup.start_instances if warmup else None,
            warmup_doubling_tokens=warmup.doubling_tokens if warmup else None,
        )
        for size in {self.config.global_batch_size, self.schedule.size(1)}:
            self.config.accumulation_steps(self.ctx.world_size, size)  # fail now, not mid-run
        self._saved_epochs = 0
        self.model = self._build_model()
        self.optimizer = build_optimizer(self.model, self.config.optim)
        self.flops_per_token = self.config.model.num_flops_per_token(self.sequence_length)
        self.peak_flops = _peak_flops(self.ctx.device)
        self.last_checkpoint: Path | None = None
        """The newest complete sharded checkpoint (one written in the background counts once
        it is in place)."""
        self._checkpointer = AsyncCheckpointer(self.ctx)

    # ------------------------------------------------------------------ setup
    def _initial_weights(self, model: OLMo) -> None:
        """Write the run's starting weights into ``model``, already on this rank's device and
        sharded or not: seeded init, or ``init_from``'s weights.

        Each rank writes only its own shards, one parameter at a time (the peak is one full
        parameter, not the model). Seeded, the gathered weights are the same at any world size
        for a device type: on CPU, exactly ``OLMo(config).init_weights(seed=config.seed)``'s;
        on CUDA the CUDA generator draws other numbers. ``init_from`` is verified once, on
        rank 0; then every rank reads its tensors from the file, one at a time.
        """
        config, init_from = self.config, self.config.init_from
        if init_from is None:
            model.init_weights(seed=config.seed)
            return
        start_config, _ = load_checkpoint_config(init_from)
        if start_config != config.model:
            raise ValueError(
                f"init_from={init_from} holds a different model config than this run's"
            )
        path = on_main_rank(self.ctx, lambda: verify_weights(init_from))
        params = model.state_dict(keep_vars=True)  # names without wrapper prefixes
        with open_safetensors(path) as weights:
            names = weights.keys()  # a list: the handle itself is not iterable
            check_tensor_shapes(
                {name: tuple(param.shape) for name, param in params.items()},
                {name: tuple(weights.get_slice(name).get_shape()) for name in names},
                source=str(path),
            )
            for name, param in params.items():
                copy_into_shard(param, weights.get_tensor(name))

    def _build_model(self) -> torch.nn.Module:
        """The model, built on the meta device; activation checkpointing, compile and FSDP2
        applied; then materialized on this rank's device and initialized there.

        FSDP2 shards it over several processes, and on CUDA in a single process too (a
        one-rank process group), so that bf16 goes through FSDP's mixed-precision policy
        exactly as at scale. A single CPU process is not sharded. Rank 0 prints which
        attention kernel training will use.
        """
        config, ctx = self.config, self.ctx
        if ctx.world_size > 1 and not config.fsdp:
            raise ValueError("fsdp=false with several processes is not supported; set fsdp=true")
        fsdp = config.fsdp and (ctx.world_size > 1 or ctx.device.type == "cuda")
        if fsdp and not ctx.initialized:
            self.ctx = ctx = join_one_rank_group(ctx)
        model = OLMo(config.model, init_device="meta")
        if config.activation_checkpointing:
            apply_activation_checkpointing(model)
        if config.compile:
            apply_compile(model)
        bf16 = config.precision == "bf16"
        if fsdp:
            apply_fsdp(model, param_dtype=torch.bfloat16 if bf16 else None)
        model.to_empty(device=ctx.device)
        self._initial_weights(model)
        if ctx.is_main:
            print(
                describe_attention(
                    config.model.n_heads,
                    config.model.head_dim,
                    device=ctx.device,
                    dtype=torch.bfloat16 if bf16 else torch.float32,
                    batch_size=config.micro_batch_size,
                    seq_len=self.sequence_length - 1,  # an instance less its last token
                )
            )
        return model

    def autocast(self) -> Any:
        """bf16 autocast for a forward pass when the run is bf16 without FSDP (else a no-op)."""
        from torch.distributed.fsdp import FSDPModule

        # Under FSDP2 its mixed-precision policy casts the parameters to bf16 instead.
        enabled = self.config.precision == "bf16" and not isinstance(self.model, FSDPModule)
        return torch.autocast(
            device_type=self.ctx.device.type, dtype=torch.bfloat16, enabled=enabled
        )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The trainer's own state (model and optimizer go through DCP beside it)."""
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "instances_consumed": self.instances_consumed,
            "epoch": self.order.epoch_of(max(self.instances_consumed - 1, 0)),
            "world_size": self.ctx.world_size,
            "rng": rng_state(),
            "loss_detector": self.skipper.state_dict(),
            "grad_norm_detector": self.grad_norm_skipper.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.tokens_seen = int(state["tokens_seen"])
        self.instances_consumed = int(state["instances_consumed"])
        set_rng_state(state["rng"])
        self.skipper.load_state_dict(state["loss_detector"])
        self.grad_norm_skipper.load_state_dict(state["grad_norm_detector"])

    def _claim_run_dir(self, held: ExitStack) -> Path | None:
        """Rank 0: hold the run directory (until ``held`` closes), check its config, tidy what
        interrupted saves left, and choose the checkpoint to resume from (or None)."""
        held.enter_context(run_directory_lock(self.run_dir))
        resolved = self.config.to_dict()
        path = self.run_dir / "config.yaml"
        if path.is_file():
            existing = yaml.safe_load(path.read_text(encoding="utf-8"))
            ours, theirs = math_of(resolved), math_of(existing)
            if ours != theirs:
                changed = sorted(
                    k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)
                )
                raise ValueError(
                    f"{self.run_dir} holds a run with a different config (sections differing: "
                    f"{', '.join(changed)}); resume it with its own config or pick another "
                    f"--run-dir (only {', '.join(HARDWARE_FIELDS)} may change on a resume)"
                )
            if existing != resolved:
                changed = sorted(k for k in resolved if existing.get(k) != resolved.get(k))
                print(
                    f"resuming {self.run_dir} with other settings that leave its math alone "
                    f"({', '.join(changed)})",
                    file=sys.stderr,
                )
        if not path.is_file() or existing != resolved:
            path.write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
        for leftover in remove_staging_folders(self.run_dir):
            print(f"removed {leftover}, left by an interrupted save", file=sys.stderr)
        # The saved order is authoritative when resuming (it must match these shards).
        self.order = DataOrder.for_run(self.run_dir, self.data, self.config.data.seed)
        # Verified here only (hashing every file once, not once per rank).
        return resume_checkpoint(self.run_dir)

    def _resume(self, checkpoint: Path | None) -> None:
        if checkpoint is None:
            return
        state = load_sharded(checkpoint, self.model, self.optimizer)
        self.load_state_dict(state)
        self.last_checkpoint = checkpoint
        if self.ctx.is_main:
            print(
                f"resumed from {checkpoint} (step {self.step}, written by {state['world_size']} process(es))"
            )

    def _unsharded_due(self, step: int) -> bool:
        interval = self.config.save_interval_unsharded
        return step == self.config.max_steps or (interval is not None and step % interval == 0)

    def _write_missing_unsharded(self) -> None:
        """The resumed step's unsharded checkpoint, if the run stopped before writing it."""
        if self.last_checkpoint is None or not self._unsharded_due(self.step):
            return
        path = checkpoint_dir(self.run_dir, self.step, unsharded=True)
        if not path.is_dir():
            self.save(unsharded=True)
            if self.ctx.is_main:
                print(f"wrote the missing {path} from {self.last_checkpoint}")

    # ------------------------------------------------------------------ the loop
    def fit(self) -> None:
        """Train to ``max_steps`` (or ``stop_at``), holding the run directory throughout."""
        with ExitStack() as held:
            checkpoint = on_main_rank(self.ctx, lambda: self._claim_run_dir(held))
            try:
                self._fit(checkpoint)
            except BaseException as error:
                try:  # the save in flight is of an earlier, good step: let it complete
                    self._complete_saves()
                except Exception as save_error:
                    error.add_note(
                        f"the checkpoint save in flight failed too: "
                        f"{type(save_error).__name__}: {save_error}"
                    )
                raise
            finally:
                self._checkpointer.close()
            if self.stopped_on_request is not None and self.ctx.is_main:
                assert self.last_checkpoint is not None
                mark_stopped(self.run_dir, self.step, self.last_checkpoint)
                print(
                    f"stopped after step {self.step} as {self.run_dir / STOP_REQUEST_FILE} "
                    f"asked; run the same command again to resume from {self.last_checkpoint}",
                    file=sys.stderr,
                )
            if self.stopped_on_request is not None:
                self.ctx.barrier()  # no rank exits (and gets the others killed) before that

    def _stop_requested(self) -> bool:
        """Rank 0 looks for the request; every rank gets its answer (one all-reduce, read
        back on the host: so it is asked at flushes only, see :meth:`_fit`)."""
        asked = self.ctx.is_main and stop_requested(self.run_dir)
        if self.ctx.initialized and self.ctx.world_size > 1:
            flag = torch.tensor(float(asked), device=self.ctx.device)
            asked = bool(self.ctx.all_reduce_mean(flag).item() > 0)
        return asked

    def _flush_due(self, step: int, last: int) -> bool:
        """Whether the metrics are read back after ``step`` (checkpoint steps aside): every
        ``log_interval`` steps, at the run's last step, and where a callback needs the model
        as it is after that step (:meth:`Callback.needs_model_at`)."""
        return (
            step % self.config.log_interval == 0
            or step >= last
            or any(callback.needs_model_at(self, step) for callback in self.callbacks)
        )

    def _flush(self, pending: list[dict[str, Any]], since: float) -> float:
        """Read ``pending``'s device metrics back in one transfer and hand every step's
        metrics, in order, to the callbacks' ``on_step_end``; returns the time of the transfer.

        ``tokens_per_s`` and ``mfu`` are the interval's: its steps' tokens over the wall time
        from ``since`` (the previous flush's transfer) to this one, so the loader, the
        callbacks and the checkpoints between the steps count. A step whose loss or grad norm
        is not finite (with skipping off) raises :class:`NonFiniteLossError` after the steps
        before it are handed over.
        """
        on_device = [
            (metrics, key)
            for metrics in pending
            for key, value in metrics.items()
            if isinstance(value, torch.Tensor)
        ]
        stacked = torch.stack(
            [metrics[key].detach().to(self.ctx.device, torch.float64) for metrics, key in on_device]
        )
        values = stacked.tolist()  # the one device-to-host transfer (float64: exact)
        now = time.perf_counter()
        for (metrics, key), value in zip(on_device, values, strict=True):
            metrics[key] = value
        tokens = sum(metrics["batch_size"] for metrics in pending) * self.sequence_length
        tokens_per_s = tokens / max(now - since, 1e-9)
        per_device = tokens_per_s / self.ctx.world_size
        mfu = per_device * self.flops_per_token / self.peak_flops if self.peak_flops else None
        for metrics in pending:
            metrics.update(tokens_per_s=tokens_per_s, mfu=mfu)
            if metrics.pop("skipped", 0.0):
                metrics["skipped"] = True
            loss, grad_norm = metrics["loss"], metrics["grad_norm"]
            if not (math.isfinite(loss) and math.isfinite(grad_norm)) and "skipped" not in metrics:
                raise NonFiniteLossError(
                    f"step {metrics['step']}: loss {loss} / grad norm {grad_norm} is not "
                    f"finite; the last good checkpoint is {self._last_good_checkpoint()} "
                    f"(step {metrics['step']}'s update was not applied, and no checkpoint was "
                    "written after it). Lower the LR, enable z_loss or skip_step.enabled=true, "
                    "and resume."
                )
            for callback in self.callbacks:
                callback.on_step_end(self, metrics)
        return now

    def _last_good_checkpoint(self) -> str:
        """For :class:`NonFiniteLossError`: the newest sharded checkpoint, counting the one in
        flight (every save follows a flush, so it is of a good step; :meth:`fit` lets it
        complete before the error propagates)."""
        in_flight = self._checkpointer.in_flight
        if in_flight is not None:
            path = checkpoint_dir(self.run_dir, in_flight)
            return f"{path}, whose save in flight completes before the run stops"
        return str(self.last_checkpoint or "none yet")

    def _fit(self, checkpoint: Path | None) -> None:
        """Resume, then train step after step, flushing metrics (:meth:`_flush`) where
        :meth:`_flush_due` says and before every checkpoint: so a checkpoint never follows an
        unreported non-finite step, and a stop request is honoured at the next flush."""
        self._resume(checkpoint)
        for callback in self.callbacks:
            callback.on_train_start(self)
        self._write_missing_unsharded()
        start = self.step
        last = min(self.config.max_steps, self.stop_at or self.config.max_steps)
        loader = BatchLoader(
            self.data,
            self.order,
            batch_size_at=self.schedule.size,
            micro_batch_size=self.config.micro_batch_size,
            rank=self.ctx.rank,
            world_size=self.ctx.world_size,
            start_step=self.step + 1,
            start_position=self.instances_consumed,
            stop_step=last,
            num_workers=self.config.data.num_workers,
            compute_fingerprint=self.ctx.is_main,
        )
        pending: list[dict[str, Any]] = []  # steps whose metrics are still on the device
        since = time.perf_counter()
        for batch in loader:
            pending.append(self.train_step(batch))
            self._complete_saves(wait=False)  # a background save that is done, or its error
            step = self.step
            save_sharded = step % self.config.save_interval == 0 and step < last
            interval = self.config.save_interval_unsharded
            save_unsharded = interval is not None and step % interval == 0 and step < last
            if not (save_sharded or save_unsharded or self._flush_due(step, last)):
                continue
            since = self._flush(pending, since)
            pending = []
            if save_sharded:
                self.save(unsharded=False)
            if save_unsharded:
                self.save(unsharded=True)
            if step < last and self._stop_requested():
                self.stopped_on_request = step
                break
        assert not pending, "the loader ended before the last step"
        self._complete_saves()
        if self.last_checkpoint is None or not self.last_checkpoint.name.endswith(
            f"{self.step:06d}"
        ):
            self.save(unsharded=False)
        if self.step > start and self._unsharded_due(self.step) and self.stopped_on_request is None:
            self.save(unsharded=True)  # at max_steps, and at an interval --stop-at ends on
        self._complete_saves()
        for callback in self.callbacks:
            callback.on_train_end(self)

    def save(self, *, unsharded: bool) -> Path:
        """Checkpoint this step; returns the checkpoint's folder.

        Waits for the save in flight first (one at a time). A sharded save with
        ``async_checkpoint`` returns once this rank's state is copied, and its folder appears
        when the background has written it (:mod:`olmo_nn.train.async_checkpointing`); the
        callbacks' ``on_checkpoint`` and :attr:`last_checkpoint` follow then, at the step that
        finds it done or the next wait.
        """
        self._complete_saves()
        config = self.config.to_dict()
        state = self.state_dict()
        keep = self.config.save_num_checkpoints_to_keep
        args = (self.run_dir, self.step)
        if unsharded:
            path = save_unsharded(*args, self.model, self.config.model, state, config, self.ctx)
        elif self.config.async_checkpoint:
            return self._checkpointer.start(
                *args, self.model, self.optimizer, state, config, keep=keep
            )
        else:
            path = save_sharded(
                *args, self.model, self.optimizer, state, config, self.ctx, keep=keep
            )
        self._checkpoint_complete(path, self.step, unsharded=unsharded)
        return path

    def _complete_saves(self, *, wait: bool = True) -> None:
        """Hand the background save to :meth:`_checkpoint_complete` once it is in place:
        waiting for it, or (``wait=False``) only if it is done. Raises its error."""
        done = self._checkpointer.wait() if wait else self._checkpointer.poll()
        if done is not None:
            self._checkpoint_complete(done.path, done.step, unsharded=False)

    def _checkpoint_complete(self, path: Path, step: int, *, unsharded: bool) -> None:
        if not unsharded:
            self.last_checkpoint = path
        for callback in self.callbacks:
            callback.on_checkpoint(self, path, step=step, unsharded=unsharded)

    def _note_epoch(self, batch: StepBatch) -> None:
        """Save each new epoch's permutation as soon as a batch reaches into it."""
        if batch.last_epoch <= self._saved_epochs:
            return
        self._saved_epochs = batch.last_epoch
        if self.ctx.is_main:
            self.order.save(self.run_dir, through_epoch=batch.last_epoch)
            print(
                f"step {batch.step}: the data ran out after {len(self.data):,} instances; rolling "
                f"into epoch {batch.last_epoch}, reshuffled with seed "
                f"{self.config.data.seed + batch.last_epoch}",
                file=sys.stderr,
            )

    def train_step(self, batch: StepBatch) -> dict[str, Any]:
        """One optimizer step on the next global batch, without a host sync; returns the
        step's metrics with ``loss``, ``grad_norm``, ``z_loss`` and ``skipped`` still 0-d device
        tensors and ``tokens_per_s`` / ``mfu`` still None (:meth:`_flush` fills them in)."""
        config, ctx = self.config, self.ctx
        step = self.step + 1
        assert batch.step == step and batch.start == self.instances_consumed, (batch.step, step)
        self._note_epoch(batch)
        batch_size = batch.size
        chunks = batch.micro_batches
        fingerprint = batch.fingerprint
        loss_sum = torch.zeros((), device=ctx.device)
        z_sum = torch.zeros((), device=ctx.device)
        sync = getattr(self.model, "set_requires_gradient_sync", None)
        for i, chunk in enumerate(chunks):
            if sync is not None:
                sync(i == len(chunks) - 1)  # reduce gradients once, after the last micro-batch
            ids = chunk.to(ctx.device, non_blocking=True)
            with self.autocast():
                # ce + z_loss * z, chunked inside the model: no (B, T, vocab) logits in fp32
                losses = self.model(
                    ids[:, :-1], targets=ids[:, 1:], z_loss_coef=config.z_loss or None
                )
            if config.z_loss:
                z_sum += losses.z_loss
            (losses.loss / len(chunks)).backward()
            loss_sum += losses.ce
        mean_loss = ctx.all_reduce_mean(loss_sum / len(chunks))
        mean_z = ctx.all_reduce_mean(z_sum / len(chunks)) if config.z_loss else None

        grad_norm = clip_grad_norm(self.model.parameters(), clip_threshold(step, config.clip))
        lr = lr_at(
            step, peak_lr=config.optim.lr, config=config.scheduler, max_steps=config.max_steps
        )
        set_lr(self.optimizer, lr)
        # Decided on the device: the host reads the values back at the next flush.
        finite = torch.isfinite(mean_loss) & torch.isfinite(grad_norm)
        if config.skip_step.enabled:
            skip = self.skipper.flag(mean_loss) | self.grad_norm_skipper.flag(grad_norm)
            self.skipper.record(mean_loss, keep=finite)
            self.grad_norm_skipper.record(grad_norm, keep=finite)
        else:
            skip = ~finite  # never applied; the flush raises NonFiniteLossError for it
        step_unless(self.optimizer, skip)
        self.optimizer.zero_grad(set_to_none=True)

        self.step = step
        self.instances_consumed += batch_size
        self.tokens_seen += batch_size * self.sequence_length
        metrics: dict[str, Any] = {
            "step": step,
            "loss": mean_loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens_seen": self.tokens_seen,
            "instances_consumed": self.instances_consumed,
            "batch_size": batch_size,
            "tokens_per_s": None,
            "mfu": None,
            "batch_fingerprint": fingerprint,
            "epoch": batch.last_epoch,
        }
        if mean_z is not None:
            metrics["z_loss"] = mean_z
        if config.skip_step.enabled:
            metrics["skipped"] = skip
        return metrics
