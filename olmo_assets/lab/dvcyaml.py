"""``dvc.yaml``, generated from the pipeline's declaration (:mod:`olmo_assets.lab.pipeline`).

``olmo lab dvc-yaml`` writes it; ``olmo lab dvc-yaml --check`` (and a test) fails when the
committed file differs from what the declaration gives. A stage per declared stage, running
the same command a Dagster asset launches; ``foreach`` over sources or checkpoints and
``matrix`` over checkpoint × task, so adding a source, checkpoint or task to ``params.yaml``
adds its stages without regenerating. Nothing here imports DVC.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from olmo_assets.lab.params import Lab, LabParams
from olmo_assets.lab.pipeline import STAGES, Artifact, Fanout, Stage, artifact_named

__all__ = ["dvc_yaml"]

#: DVC's loop variables for each fanout: ``foreach`` gives ``key`` (over a mapping) or
#: ``item`` (over a list); ``matrix`` gives ``item.<name>``.
_VARIABLES = {
    Fanout.ONCE: {},
    Fanout.SOURCE: {"source": "${key}"},
    Fanout.CHECKPOINT: {"step": "${item}"},
    Fanout.CHECKPOINT_TASK: {"step": "${item.step}", "task": "${item.task}"},
}
_LOOPS: dict[Fanout, dict[str, Any]] = {
    Fanout.SOURCE: {"foreach": "${sources}"},
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
    blocks = [HEADER, "stages:\n"]
    for stage in STAGES:
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
