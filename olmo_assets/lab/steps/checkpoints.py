"""The checkpoint step: one kept checkpoint of the training run, verified and recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from olmo_assets.lab.params import Lab
from olmo_assets.lab.samples import batch_document_rows
from olmo_assets.lab.steps.results import InputError, Rows, StepResult, relative
from olmo_nn.atomic import staged_folder

__all__ = ["checkpoint_folder", "record_checkpoint", "recorded_checkpoint"]


def checkpoint_folder(lab: Lab, step: int) -> Path:
    """The training run's unsharded checkpoint at ``step`` (an error naming the fix if absent)."""
    path = lab.checkpoint(step)
    if not path.is_dir():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist: train past step {step} first, and keep "
            f"eval.checkpoints in params.yaml to multiples of train.checkpoint_interval"
        )
    return path


def record_checkpoint(lab: Lab, step: int) -> StepResult:
    """Load the checkpoint (which verifies it) and record its path, sizes, content hash, tokens
    seen and parameters in ``lab/checkpoints/step<N>/checkpoint.json``: evaluations depend on
    this record, so an unchanged checkpoint leaves them up to date.

    The metadata adds what the run fed the model up to ``step``, traced through its data
    order and token shards: the tokens of each source (``tokens_by_source``) and the
    documents of its last batches (``sample_documents``)."""
    import olmo_nn
    from olmo_nn.checkpoint.integrity import content_hash
    from olmo_nn.checkpoint.unsharded import WEIGHTS_FILE

    checkpoint = checkpoint_folder(lab, step)
    model = olmo_nn.load_model(checkpoint)
    state = json.loads((checkpoint / "train_state.json").read_text(encoding="utf-8"))
    files = [p for p in checkpoint.rglob("*") if p.is_file()]
    record = {
        "step": step,
        "checkpoint_path": relative(lab, checkpoint),
        "weights_bytes": sum(p.stat().st_size for p in files if p.name == WEIGHTS_FILE),
        "folder_bytes": sum(p.stat().st_size for p in files),
        "sha256": content_hash(checkpoint),
        "parameters": model.num_params(),
        "tokens_seen": state["tokens_seen"],
        "epoch": state["epoch"],
    }
    tokens_by_source = _tokens_by_source(lab, step)
    documents, matches = batch_document_rows(lab.run_dir, step)
    with staged_folder(lab.checkpoint_record(step)) as staged:
        staged.mkdir()
        (staged / "checkpoint.json").write_text(
            json.dumps(record, indent=1) + "\n", encoding="utf-8"
        )
    metadata: dict[str, Any] = dict(record)
    if matches is not None:
        # The batches shown recompute to the fingerprints the run logged: the documents
        # are the ones the model saw.
        metadata["batch_fingerprints_match"] = matches
    return StepResult(
        metadata, {"tokens_by_source": tokens_by_source, "sample_documents": documents}
    )


def _tokens_by_source(lab: Lab, step: int) -> Rows:
    """Tokens of each source in the batches up to ``step`` and their share (see
    :func:`olmo_assets.lab.query.source_tokens_at`)."""
    from olmo_assets.lab.lineage import TrainingBatches, load_training_batches
    from olmo_assets.lab.query import source_tokens_at

    batches = load_training_batches(lab)
    if not isinstance(batches, TrainingBatches):
        raise InputError(
            f"{batches.path} does not exist: the checkpoint's batches cannot be traced to "
            f"their sources without it (step `{batches.step}` writes it)"
        )
    return [row | {"share": round(row["share"], 4)} for row in source_tokens_at(batches, step)]


def recorded_checkpoint(lab: Lab, step: int) -> tuple[Path, str]:
    """The checkpoint an evaluation scores and its content hash, verified against the lab's
    record of it: the hash must be the one ``lab/checkpoints/step<N>/checkpoint.json`` holds,
    so no score comes from weights that changed after they were recorded."""
    from olmo_nn.checkpoint.integrity import content_hash

    path = checkpoint_folder(lab, step)
    record = lab.checkpoint_record(step) / "checkpoint.json"
    if not record.is_file():
        raise FileNotFoundError(
            f"{record} does not exist: materialize checkpoint[{step}] first "
            f"(or `dvc repro checkpoint@{step}`)"
        )
    recorded = json.loads(record.read_text(encoding="utf-8"))["sha256"]
    actual = content_hash(path)
    if actual != recorded:
        raise InputError(
            f"{path} changed after it was recorded: its content hash is {actual[:16]}, "
            f"{record} says {recorded[:16]}; if the change is meant, record it again "
            f"(`dvc repro checkpoint@{step}`, or materialize checkpoint[{step}])"
        )
    return path, actual
