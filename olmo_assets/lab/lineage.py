"""The training run's batches as tables: the instances and documents of every step.

:func:`load_training_batches` reads what the trainer left in its run directory (the resolved
``config.yaml``, the saved data order, ``metrics.jsonl``) and opens the token shards it
trained on; :meth:`TrainingBatches.tables` lays out, as Arrow tables:

* ``batch_instances``: ``step, row, position, epoch, instance`` — global batch ``step``
  (1-based) is the instances at positions ``[start(step), start(step) + size(step))`` of the
  data order, under the trainer's own batch schedule (:class:`olmo_nn.train.batch.BatchSchedule`);
* ``instance_documents``: the documents in each of those instances with their token spans
  (:meth:`olmo_nn.train.data_order.InstanceSpace.documents_in_instance`);
* ``data_order``: ``epoch, position, instance`` — the saved permutations (and any epoch the
  batches reached).

This is the code ``olmo batch`` reconstructs one batch with, run over every step at once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olmo_assets.lab.params import Lab

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["MissingInput", "TrainingBatches", "load_training_batches"]


@dataclass(frozen=True)
class MissingInput:
    """An input the batches cannot be traced without, and the step that writes it."""

    path: Path | str
    step: str


@dataclass
class TrainingBatches:
    """A training run's batch schedule, data order and instance space, up to its last step."""

    space: Any
    """:class:`~olmo_nn.train.data_order.InstanceSpace` over the run's token shards."""
    order: Any
    """:class:`~olmo_nn.train.data_order.DataOrder` the run saved."""
    schedule: Any
    """:class:`~olmo_nn.train.batch.BatchSchedule` from the run's config."""
    last_step: int
    key: str
    """Changes when the config, the data order, the shards or the last step change."""

    def tables(self) -> dict[str, pa.Table]:
        """``batch_instances``, ``instance_documents`` and ``data_order``."""
        import numpy as np
        import pyarrow as pa

        steps = np.arange(1, self.last_step + 1, dtype=np.int64)
        starts = np.array([self.schedule.start(int(s)) for s in steps], dtype=np.int64)
        sizes = np.array([self.schedule.size(int(s)) for s in steps], dtype=np.int64)
        total = int(starts[-1] + sizes[-1])
        positions = np.arange(total, dtype=np.int64)
        instances = np.asarray(self.order.global_indices(0, total), dtype=np.int64)
        epochs_used = positions // self.order.num_instances
        batches = pa.table(
            {
                "step": np.repeat(steps, sizes),
                "row": positions - np.repeat(starts, sizes),
                "position": positions,
                "epoch": epochs_used,
                "instance": instances,
            }
        )
        names = ["instance", "folder", "local_instance", "source", "doc_id", "doc_index"]
        names += ["instance_start", "instance_end", "doc_offset", "tokens"]
        columns: dict[str, list[Any]] = {name: [] for name in names}
        for instance in np.unique(instances).tolist():
            origin = self.space.documents_in_instance(instance)
            for doc in origin.documents:
                values = [instance, origin.folder, origin.local_instance, doc.source, doc.id]
                values += [doc.index, doc.start, doc.end, doc.offset, doc.end - doc.start]
                for name, value in zip(names, values, strict=True):
                    columns[name].append(value)
        epochs = sorted(set(self.order.saved_files) | set(np.unique(epochs_used).tolist()))
        size = self.order.num_instances
        order = pa.table(
            {
                "epoch": np.repeat(np.array(epochs, dtype=np.int64), size),
                "position": np.tile(np.arange(size, dtype=np.int64), len(epochs)),
                "instance": np.concatenate(
                    [np.asarray(self.order.permutation(e), dtype=np.int64) for e in epochs]
                ),
            }
        )
        return {
            "batch_instances": batches,
            "instance_documents": pa.table(columns),
            "data_order": order,
        }


def load_training_batches(lab: Lab) -> TrainingBatches | MissingInput:
    """The run in ``lab.run_dir``, or the input it lacks.

    Raises ``ValueError`` when the shards changed since the run: its batches would trace
    back to documents they never held.
    """
    import yaml

    from olmo_nn.train.batch import CONFIG_FILE, BatchSchedule
    from olmo_nn.train.callbacks.metrics_file import METRICS_FILE, read_metrics
    from olmo_nn.train.data_order import DATA_ORDER_DIR, ORDER_FILE, DataOrder, InstanceSpace

    run_dir = lab.run_dir
    config_path = run_dir / CONFIG_FILE
    records = read_metrics(run_dir)
    if not config_path.is_file() or not records:
        return MissingInput(run_dir / METRICS_FILE, "train")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    data = config["data"]
    folders = [str(p) for p in data["paths"]]
    for folder in folders:
        if not (Path(folder) / "manifest.json").is_file():
            return MissingInput(f"{folder} (the run's token shards)", "tokenize")
    warmup = config.get("batch_size_warmup") or {}
    schedule = BatchSchedule(
        global_batch_size=int(config["global_batch_size"]),
        sequence_length=int(data["sequence_length"]),
        warmup_start_instances=warmup.get("start_instances"),
        warmup_doubling_tokens=warmup.get("doubling_tokens"),
    )
    space = InstanceSpace(folders, schedule.sequence_length)
    order_file = run_dir / DATA_ORDER_DIR / ORDER_FILE
    if order_file.is_file():
        order = DataOrder.load(run_dir)
        if order.differences(space, int(data["seed"])):
            raise ValueError(
                f"the token shards {', '.join(folders)} changed since the training run (they "
                f"differ from {order_file}): rerun training (`dvc repro`, or the Dagster UI) "
                "so that its batches trace back to the documents they held"
            )
    else:
        order = DataOrder.for_space(space, int(data["seed"]))
    last_step = max(int(r["step"]) for r in records)
    identity = [
        config_path.read_text(encoding="utf-8"),
        order_file.read_text(encoding="utf-8") if order_file.is_file() else "",
        space.fingerprint(),
        last_step,
    ]
    key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()
    return TrainingBatches(space, order, schedule, last_step, key)
