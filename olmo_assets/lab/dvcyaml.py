"""``dvc.yaml``, generated from the pipeline's declaration (:mod:`olmo_assets.lab.pipeline`).

``olmo lab dvc-yaml`` writes it; ``olmo lab dvc-yaml --check`` (and a test) fails when the
committed file differs from what the declaration gives. A stage per declared stage, running
the same command a Dagster asset launches; ``foreach`` over source shards (the shard plan's
``shards``, read as ``vars``) or checkpoints and ``matrix`` over checkpoint × task, so adding
a checkpoint or task to ``params.yaml``, or a shard to the plan, needs no regeneration.

The stage that reads a source's own files is the exception: DVC cannot loop over a list of
dependencies, so ``sources/dvc.yaml`` spells it out per shard, each with that shard's files
as external dependencies (local paths, ``s3://`` URLs), which DVC checks by their hash
(cached by modification time) or ETag: a changed file makes exactly its shard's stage
changed. ``olmo lab shards`` writes it with the plan. Nothing here imports DVC.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from olmo_assets.lab.params import SHARDS_FILE, Lab, LabParams
from olmo_assets.lab.pipeline import (
    SOURCES_DVC_YAML,
    STAGES,
    Artifact,
    Fanout,
    Stage,
    StageRun,
    artifact_named,
)
from olmo_assets.lab.shards import ShardPlan

__all__ = ["dvc_yaml", "sources_dvc_yaml"]

#: DVC's loop variables for each fanout: ``foreach`` gives ``key`` (over a mapping) or
#: ``item`` (over a list); ``matrix`` gives ``item.<name>``.
_VARIABLES = {
    Fanout.ONCE: {},
    Fanout.SHARD: {"source": "${item.source}", "shard": "${item.shard}"},
    Fanout.CHECKPOINT: {"step": "${item}"},
    Fanout.CHECKPOINT_TASK: {"step": "${item.step}", "task": "${item.task}"},
}
_LOOPS: dict[Fanout, dict[str, Any]] = {
    Fanout.SHARD: {"foreach": "${shards}"},
    Fanout.CHECKPOINT: {"foreach": "${eval.checkpoints}"},
    Fanout.CHECKPOINT_TASK: {"matrix": {"step": "${eval.checkpoints}", "task": "${eval.tasks}"}},
}
_HOLE = "\x00"

HEADER = """\
# The lab's pipeline as DVC stages. GENERATED from olmo_assets/lab/pipeline.py by
# `olmo lab dvc-yaml`: edit the declaration there and regenerate (a test fails when this file
# is out of date). Each stage runs the very command a Dagster asset launches, lists exactly
# the params.yaml keys its step reads, the files they name, its input folders and its code.
#
# `dvc repro` runs what is out of date; `dvc exp run -S eval.limit=100` tries a parameter;
# `dvc metrics show` and `dvc plots show` read the model report. Artifacts live in lab/.
"""


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _folder(lab: Lab, artifact: Artifact, keys: dict[str, str], *, every: bool) -> str:
    """An artifact's folder with DVC's loop variables, or (``every``) the folder holding all
    of its partitions: its path up to the first part that depends on a partition."""
    fanout = artifact_named(artifact.name)[0].fanout
    if not every:
        return _relative(artifact.folder(lab, *(keys[k] for k in fanout.keys)), lab.repo)
    path = artifact.folder(lab, *([_HOLE] * len(fanout.keys)))
    parts = path.relative_to(lab.repo).parts
    cut = next((i for i, part in enumerate(parts) if _HOLE in part), len(parts))
    return Path(*parts[:cut]).as_posix()


def _stage(lab: Lab, stage: Stage) -> dict[str, Any]:
    keys = _VARIABLES[stage.fanout]
    command = ["python", "-m", "olmo_assets.defs.stage", stage.name, *keys.values()]
    deps = [*stage.code_paths, *(f"${{{key}}}" for key in stage.files)]
    read = [_folder(lab, artifact_named(r.artifact)[1], keys, every=r.every) for r in stage.reads]
    # A folder inside another input (the validation splits inside the curated corpus) is
    # already part of it.
    deps += [f for f in read if not any(f.startswith(other + "/") for other in read)]
    folders = [_folder(lab, artifact, keys, every=False) for artifact in stage.writes]
    # An artifact inside another one of the stage (the validation splits inside the curated
    # corpus) is part of that output, not an output of its own.
    outs: list[Any] = [
        f for f in folders if not any(f.startswith(other + "/") for other in folders)
    ]
    if stage.persist:
        outs = [{out: {"persist": True}} for out in outs]
    body: dict[str, Any] = {"cmd": " ".join(command)}
    if stage.params:
        body["params"] = [p.format(**keys) for p in stage.params]
    body |= {"deps": deps, "outs": outs}
    loop = _LOOPS.get(stage.fanout)
    if loop is None:
        return body
    if "foreach" in loop:
        return {**loop, "do": body}
    return {**loop, **body}


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, width=100, default_flow_style=False)


def _indent(text: str) -> str:
    return "".join(f"  {line}" if line.strip() else line for line in text.splitlines(True))


def dvc_yaml() -> str:
    """The text of ``dvc.yaml`` for :data:`~olmo_assets.lab.pipeline.STAGES`."""
    lab = Lab(Path("/repo"), LabParams())
    # The shard plan's `shards` mapping is what the per-shard stages loop over.
    blocks = [HEADER, _dump({"vars": [f"{SHARDS_FILE}:shards"]}), "stages:\n"]
    for stage in STAGES:
        if stage.reads_files:
            blocks.append(f"  # {stage.group}: {stage.name} -> written out per shard in "
                          f"{SOURCES_DVC_YAML}\n")  # fmt: skip
            continue
        names = ", ".join(a.name for a in stage.writes)
        blocks.append(f"  # {stage.group}: {stage.name} -> {names}\n")
        blocks.append(_indent(_dump({stage.name: _stage(lab, stage)})))
    report = _relative(artifact_named("model_report")[1].folder(lab), lab.repo)
    blocks.append(
        "\n# The model report's files: `dvc metrics show`, `dvc plots show`, and their diffs\n"
        "# between experiments (`dvc exp show`, `dvc plots diff`).\n"
    )
    blocks.append(_dump({"metrics": [f"{report}/metrics.json"]}))
    plots = [
        {
            "Training loss": {
                "x": "step",
                "y": {f"{report}/loss.csv": "loss"},
                "x_label": "step",
                "y_label": "loss",
            }
        },
        {
            # The tasks' columns: the group scores' columns after them (MMLU's averages, the
            # suites') depend on which tasks are listed, which this file does not; they are
            # in acc_by_step.png.
            "Accuracy by checkpoint": {
                "x": "step",
                "y": {f"{report}/acc_by_step.csv": "${eval.tasks}"},
                "x_label": "step",
                "y_label": "accuracy",
            }
        },
    ]
    blocks.append(_dump({"plots": plots}))
    return "".join(blocks)


SOURCES_HEADER = """\
# The stages that read each source's own files, one per shard. GENERATED with the shard plan
# (sources/shards.yaml) by `olmo lab shards`: commit both. Each names its shard's files as
# external dependencies, so `dvc status` shows exactly the shard whose file changed.
"""


def sources_dvc_yaml(lab: Lab, plan: ShardPlan) -> str:
    """The text of ``sources/dvc.yaml``: every file-reading stage for every planned shard,
    run from the repository root (``wdir: ..``)."""
    stages: dict[str, Any] = {}
    for stage in (s for s in STAGES if s.reads_files):
        for source, shards in plan.files.items():
            for shard in sorted(shards):
                run = StageRun(stage, (source, shard))
                folders = [_relative(run.folder(lab, a), lab.repo) for a in stage.writes]
                body: dict[str, Any] = {"wdir": "..", "cmd": " ".join(run.command)}
                body["params"] = list(run.params())
                # The plan names files inside the repository by their path in it (relative to
                # `wdir: ..`), others by absolute path or URL: DVC's external dependencies.
                body["deps"] = [*stage.code_paths, *shards[shard]]
                body["outs"] = folders
                stages[run.dvc_name.split(":", 1)[1]] = body
    return SOURCES_HEADER + _dump({"stages": stages})
