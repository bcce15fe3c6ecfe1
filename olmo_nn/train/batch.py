"""Which instances form step N's global batch, and tracing that batch back to documents.

:func:`batch_start` and :func:`batch_size_at` are the batch schedule the trainer and
``olmo batch`` share: step ``N`` (1-based: the first optimizer step is step 1) consumes
instances ``[batch_start(N), batch_start(N) + batch_size_at(N))`` of the data order. With
batch-size warmup the size doubles as tokens accumulate:
``size = min(global_batch_size, start_instances * 2 ** floor(tokens_seen / doubling_tokens))``
where ``tokens_seen`` counts the tokens of every earlier step.

:func:`reconstruct_batch` rebuilds a run's batch from its directory (``config.yaml``,
``data_order/``, ``metrics.jsonl``), reading only the permutation slice, the batch's token
windows and the document indexes of the folders it touches.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from olmo_nn.data.instances import InstanceDocument
from olmo_nn.train.data_order import (
    DATA_ORDER_DIR,
    ORDER_FILE,
    DataOrder,
    InstanceSpace,
    batch_fingerprint,
)
from olmo_nn.train.schedule import BatchSizeWarmupConfig, global_batch_instances_at

__all__ = [
    "CONFIG_FILE",
    "METRICS_FILE",
    "BatchInstance",
    "BatchSchedule",
    "ReconstructedBatch",
    "batch_size_at",
    "batch_start",
    "format_batch",
    "reconstruct_batch",
    "warmup_batch_sizes",
]

#: The resolved training config inside a run directory.
CONFIG_FILE = "config.yaml"
#: Per-step metrics inside a run directory, one JSON object per line.
METRICS_FILE = "metrics.jsonl"


# ---------------------------------------------------------------------- the batch schedule
def _check_schedule(
    step: int,
    global_batch_size: int,
    sequence_length: int,
    start_instances: int | None,
    doubling_tokens: int | None,
) -> None:
    if step < 1:
        raise ValueError(f"step={step}: steps are numbered from 1 (the first optimizer step)")
    if global_batch_size <= 0 or sequence_length <= 0:
        raise ValueError(
            f"global_batch_size={global_batch_size} and sequence_length={sequence_length} "
            "must be positive"
        )
    if (start_instances is None) != (doubling_tokens is None):
        raise ValueError(
            "batch-size warmup needs both start_instances and doubling_tokens (or neither)"
        )
    if start_instances is not None and (start_instances <= 0 or (doubling_tokens or 0) <= 0):
        raise ValueError(
            f"batch-size warmup start_instances={start_instances} and "
            f"doubling_tokens={doubling_tokens} must be positive"
        )


def _warmup_size(
    position: int, global_batch_size: int, sequence_length: int, start: int, doubling: int
) -> int:
    """The batch size after ``position`` instances: the trainer's rule, from the schedule."""
    return global_batch_instances_at(
        position * sequence_length,
        final_instances=global_batch_size,
        warmup=BatchSizeWarmupConfig(start_instances=start, doubling_tokens=doubling),
    )


def batch_start(
    step: int,
    *,
    global_batch_size: int,
    sequence_length: int,
    warmup_start_instances: int | None = None,
    warmup_doubling_tokens: int | None = None,
) -> int:
    """Instances consumed before step ``step`` (1-based): where its global batch begins.

    Without warmup this is ``(step - 1) * global_batch_size``; with it, the sizes of steps
    ``1..step-1`` summed, in O(number of doublings).
    """
    _check_schedule(
        step, global_batch_size, sequence_length, warmup_start_instances, warmup_doubling_tokens
    )
    if warmup_start_instances is None or warmup_doubling_tokens is None:
        return (step - 1) * global_batch_size
    position, current = 0, 1
    while True:
        size = _warmup_size(
            position,
            global_batch_size,
            sequence_length,
            warmup_start_instances,
            warmup_doubling_tokens,
        )
        if size == global_batch_size:
            return position + (step - current) * size
        # Steps at this size until tokens_seen reaches the next multiple of doubling_tokens.
        doublings = position * sequence_length // warmup_doubling_tokens
        threshold = -(-(doublings + 1) * warmup_doubling_tokens // sequence_length)
        num_steps = -(-(threshold - position) // size)
        if current + num_steps >= step:
            return position + (step - current) * size
        position += num_steps * size
        current += num_steps


def batch_size_at(
    step: int,
    *,
    global_batch_size: int,
    sequence_length: int,
    warmup_start_instances: int | None = None,
    warmup_doubling_tokens: int | None = None,
) -> int:
    """Instances in step ``step``'s global batch (``global_batch_size`` once warmup is over)."""
    start = batch_start(
        step,
        global_batch_size=global_batch_size,
        sequence_length=sequence_length,
        warmup_start_instances=warmup_start_instances,
        warmup_doubling_tokens=warmup_doubling_tokens,
    )
    if warmup_start_instances is None or warmup_doubling_tokens is None:
        return global_batch_size
    return _warmup_size(
        start, global_batch_size, sequence_length, warmup_start_instances, warmup_doubling_tokens
    )


def warmup_batch_sizes(global_batch_size: int, warmup_start_instances: int | None) -> list[int]:
    """Every global batch size a run can use, so divisibility can be checked before training."""
    if warmup_start_instances is None or warmup_start_instances >= global_batch_size:
        return [global_batch_size]
    sizes = []
    size = warmup_start_instances
    while size < global_batch_size:
        sizes.append(size)
        size *= 2
    return [*sizes, global_batch_size]


@dataclass(frozen=True)
class BatchSchedule:
    """The batch-schedule settings of a run, as ``config.yaml`` records them."""

    global_batch_size: int
    sequence_length: int
    warmup_start_instances: int | None = None
    warmup_doubling_tokens: int | None = None

    def start(self, step: int) -> int:
        """:func:`batch_start` of ``step``."""
        return batch_start(step, **asdict(self))

    def size(self, step: int) -> int:
        """:func:`batch_size_at` of ``step`` (a ``batch_size_at`` callable for the loader)."""
        return batch_size_at(step, **asdict(self))


# ---------------------------------------------------------------------- reconstruction
@dataclass(frozen=True)
class BatchInstance:
    """One instance of a reconstructed batch and the documents it holds."""

    position: int
    """Row in the global batch (0-based)."""
    instance: int
    """Global instance index."""
    folder: str
    """Token-shard folder it was cut from."""
    local_instance: int
    """Instance index inside that folder."""
    documents: list[InstanceDocument]
    """Documents in the window; ``start``/``end`` are token positions in the instance and
    ``offset`` where that span begins inside the document."""


@dataclass
class ReconstructedBatch:
    """Global batch ``step`` of a run, recomputed from its run directory."""

    step: int
    start: int
    """Instances consumed before this step."""
    size: int
    epochs: list[int]
    """Epochs the batch draws from (two when it spans an epoch boundary)."""
    sequence_length: int
    indices: list[int]
    batch_fingerprint: str
    """Recomputed from the shards (:func:`~olmo_nn.train.data_order.batch_fingerprint`)."""
    recorded_batch_fingerprint: str | None
    """The ``batch_fingerprint`` metrics.jsonl holds for this step, if any."""
    instances: list[BatchInstance]
    warnings: list[str] = field(default_factory=list)

    @property
    def matches(self) -> bool | None:
        """Whether the recomputed fingerprint equals the recorded one (None: nothing recorded)."""
        if self.recorded_batch_fingerprint is None:
            return None
        return self.recorded_batch_fingerprint == self.batch_fingerprint

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: the fields above plus ``matches``; each document lists ``source``,
        ``id``, ``index`` (its row in the folder's index), ``instance_span`` and
        ``document_span`` (``[start, end)`` token positions in the instance / the document)."""
        data = asdict(self)
        data["matches"] = self.matches
        for instance in data["instances"]:
            for document in instance["documents"]:
                length = document["end"] - document["start"]
                document["document_span"] = [document["offset"], document["offset"] + length]
                document["instance_span"] = [document.pop("start"), document.pop("end")]
                document.pop("offset")
        return data


def _read_run_config(run_dir: Path) -> tuple[list[str], int, int, BatchSchedule]:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {CONFIG_FILE}; is it a training run directory?")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    config = yaml.load(path.read_text(encoding="utf-8"), Loader=loader) or {}
    try:
        data = config["data"]
        paths = [str(p) for p in data["paths"]]
        sequence_length = int(data["sequence_length"])
        seed = int(data["seed"])
        global_batch_size = int(config["global_batch_size"])
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"{path} lacks {error} (needs data.paths, data.sequence_length, data.seed and "
            "global_batch_size of a resolved training config)"
        ) from None
    warmup = config.get("batch_size_warmup") or {}
    schedule = BatchSchedule(
        global_batch_size=global_batch_size,
        sequence_length=sequence_length,
        warmup_start_instances=warmup.get("start_instances"),
        warmup_doubling_tokens=warmup.get("doubling_tokens"),
    )
    return paths, sequence_length, seed, schedule


def _recorded_step(run_dir: Path, step: int) -> tuple[dict[str, Any] | None, list[str]]:
    """The last metrics record of ``step`` (a resumed run may log a step twice), and warnings."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return None, [f"{path} does not exist: no recorded fingerprint to compare"]
    found: dict[str, Any] | None = None
    unreadable = 0
    needle = str(step)
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if needle not in line:  # cheap filter: most lines are other steps
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                unreadable += 1
                continue
            if isinstance(record, dict) and record.get("step") == step:
                found = record
    warnings = [f"{unreadable} unreadable line(s) in {path} skipped"] if unreadable else []
    if found is None or not found.get("batch_fingerprint"):
        warnings.append(f"{path} records no batch_fingerprint for step {step}")
    return found, warnings


def _check_recorded_position(record: dict[str, Any], start: int, size: int) -> list[str]:
    """Compare the logged batch size and instances consumed with the recomputed schedule."""
    logged_size, consumed = record.get("batch_size"), record.get("instances_consumed")
    if logged_size is None or consumed is None or (logged_size, consumed) == (size, start + size):
        return []
    return [
        f"metrics.jsonl logs batch_size={logged_size}, instances_consumed={consumed} for this "
        f"step but the config's batch schedule gives {size} and {start + size}; "
        "check global_batch_size and batch_size_warmup in config.yaml"
    ]


def reconstruct_batch(run_dir: str | os.PathLike[str], step: int) -> ReconstructedBatch:
    """Global batch ``step`` (1-based) of the run in ``run_dir``, traced to its documents."""
    run_dir = Path(run_dir)
    paths, sequence_length, seed, schedule = _read_run_config(run_dir)
    start, size = schedule.start(step), schedule.size(step)
    space = InstanceSpace(paths, sequence_length)
    warnings: list[str] = []
    if (run_dir / DATA_ORDER_DIR / ORDER_FILE).is_file():
        order = DataOrder.load(run_dir)
        mismatches = order.differences(space, seed)
        changed = mismatches.pop("shards_fingerprint", None)
        if mismatches:
            described = ", ".join(
                f"{key}={saved!r} but {CONFIG_FILE} and the shards give {now!r}"
                for key, (saved, now) in mismatches.items()
            )
            raise ValueError(
                f"{run_dir / DATA_ORDER_DIR / ORDER_FILE} records {described}; "
                "the shards or the config changed since the run"
            )
        if changed is not None and changed[0]:
            warnings.append(
                f"the shards' manifests changed since the run (fingerprint {changed[1][:12]} "
                f"!= {changed[0][:12]}); tokens may differ from what the run saw"
            )
        missing = {order.epoch_of(start), order.epoch_of(start + size - 1)} - set(order.saved_files)
        if missing:
            warnings.append(
                f"epoch(s) {sorted(missing)} not saved in {DATA_ORDER_DIR}/; recomputed from the seed"
            )
    else:
        order = DataOrder.for_space(space, seed)
        warnings.append(
            f"{run_dir} has no {DATA_ORDER_DIR}/; the order was recomputed from the seed"
        )
    indices = order.global_indices(start, size)
    instances = []
    for row, index in enumerate(indices):
        origin = space.documents_in_instance(int(index))
        instances.append(
            BatchInstance(
                position=row,
                instance=origin.instance,
                folder=origin.folder,
                local_instance=origin.local_instance,
                documents=origin.documents,
            )
        )
    record, metric_warnings = _recorded_step(run_dir, step)
    if record is not None:
        metric_warnings += _check_recorded_position(record, start, size)
    recorded = record.get("batch_fingerprint") if record is not None else None
    return ReconstructedBatch(
        step=step,
        start=start,
        size=size,
        epochs=sorted({order.epoch_of(start), order.epoch_of(start + size - 1)}),
        sequence_length=sequence_length,
        indices=[int(i) for i in indices],
        batch_fingerprint=batch_fingerprint(space.tokens(indices)),
        recorded_batch_fingerprint=str(recorded) if recorded else None,
        instances=instances,
        warnings=warnings + metric_warnings,
    )


def format_batch(
    batch: ReconstructedBatch, *, max_instances: int = 16, max_documents: int = 6
) -> str:
    """A readable table of the batch; long listings are cut (0: no limit)."""
    epochs = "/".join(str(e) for e in batch.epochs)
    lines = [
        f"step {batch.step}: {batch.size} instances x {batch.sequence_length} tokens, "
        f"positions {batch.start}..{batch.start + batch.size - 1} (epoch {epochs})",
        f"batch fingerprint {batch.batch_fingerprint}"
        + {
            None: " (none recorded in metrics.jsonl)",
            True: " matches metrics.jsonl",
            False: f" DOES NOT MATCH metrics.jsonl ({batch.recorded_batch_fingerprint})",
        }[batch.matches],
        "",
        f"{'row':>5} {'instance':>9}  {'folder':<24} {'local':>7}  {'source':<12} "
        f"{'document':<24} {'in instance':>13} {'in document':>15}",
    ]
    shown = batch.instances if max_instances <= 0 else batch.instances[:max_instances]
    for item in shown:
        head = f"{item.position:>5} {item.instance:>9}  {_cut(item.folder, 24):<24} {item.local_instance:>7}"
        documents = item.documents if max_documents <= 0 else item.documents[:max_documents]
        for number, doc in enumerate(documents):
            prefix = head if number == 0 else " " * len(head)
            in_doc = f"{doc.offset}-{doc.offset + doc.end - doc.start}"
            lines.append(
                f"{prefix}  {_cut(doc.source, 12):<12} {_cut(doc.id, 24):<24} "
                f"{f'{doc.start}-{doc.end}':>13} {in_doc:>15}"
            )
        if len(documents) < len(item.documents):
            lines.append(
                " " * len(head) + f"  ... and {len(item.documents) - len(documents)} more documents"
            )
    if len(shown) < len(batch.instances):
        lines.append(
            f"... and {len(batch.instances) - len(shown)} more instances (--limit 0 or --json lists all)"
        )
    lines.extend(f"warning: {w}" for w in batch.warnings)
    return "\n".join(lines)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3) :]
