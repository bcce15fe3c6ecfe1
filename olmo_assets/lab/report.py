"""The model report: training loss and evaluation scores by checkpoint, as files DVC reads.

:func:`collect_model_report` gathers the losses of ``lab/runs/train/metrics.jsonl`` and the
results of every evaluation ``params.yaml`` asks for; :func:`write_model_report` writes:

* ``metrics.json``: ``dvc metrics show`` — final losses, accuracy per checkpoint and task,
  perplexity and bits per byte per checkpoint and source;
* ``loss.csv`` (``step,loss,eval_loss``), ``eval_by_step.csv`` (``step,task,acc``),
  ``acc_by_step.csv`` (``step`` and one column per task: one line per task in ``dvc plots``)
  and ``perplexity.csv`` (``step,source,perplexity,bits_per_byte``);
* ``eval_table.parquet``: accuracy, one row per checkpoint and one column per task;
* ``loss.png``, ``acc_by_step.png``, ``bits_per_byte.png``.

The report is a function of the losses and the results alone: throughput and other timings
in ``metrics.jsonl`` are left out and nothing carries a timestamp, so the same run gives the
same bytes (DVC sees no change on a rerun).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olmo_assets.lab.params import Lab

__all__ = ["ModelReport", "collect_model_report", "eval_table_rows", "write_model_report"]

PERPLEXITY_METRICS = ("perplexity", "bits_per_byte")


@dataclass
class ModelReport:
    """What the report shows, read from the run and the evaluation folders."""

    losses: dict[int, float]
    """Training loss by step."""
    eval_losses: dict[int, float]
    """In-loop validation loss (``eval/loss``) at the steps that logged one."""
    tokens_seen: int
    checkpoints: list[int]
    tasks: list[str]
    accuracy: dict[tuple[int, str], float] = field(default_factory=dict)
    """``acc`` (the task's default normalization) by (checkpoint step, task)."""
    perplexity: dict[tuple[int, str], dict[str, float]] = field(default_factory=dict)
    """``{metric: value}`` by (checkpoint step, validation source)."""
    missing: list[str] = field(default_factory=list)
    """Evaluation folders params.yaml asks for that hold no result yet."""

    def mean_accuracy(self, step: int) -> float:
        """Mean ``acc`` over the tasks that scored checkpoint ``step`` (NaN when none did)."""
        scores = [self.accuracy[step, t] for t in self.tasks if (step, t) in self.accuracy]
        return sum(scores) / len(scores) if scores else math.nan


def _rounded(value: float, digits: int) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


def _read_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def collect_model_report(lab: Lab) -> ModelReport:
    """The losses and the results of ``eval.checkpoints`` × ``eval.tasks`` (and perplexity)."""
    from olmo_nn.train.callbacks.metrics_file import METRICS_FILE, read_metrics

    records = read_metrics(lab.run_dir)
    if not records:
        raise FileNotFoundError(
            f"{lab.run_dir / METRICS_FILE} does not exist or is empty: run the train step first"
        )
    # A resume truncates metrics.jsonl to its checkpoint; should a step still appear twice,
    # its last record counts.
    by_step = {int(r["step"]): r for r in records}
    report = ModelReport(
        # float(): metrics.jsonl writes NaN and infinities as strings.
        losses={s: float(r["loss"]) for s, r in sorted(by_step.items()) if "loss" in r},
        eval_losses={
            s: float(r["eval/loss"]) for s, r in sorted(by_step.items()) if "eval/loss" in r
        },
        tokens_seen=int(by_step[max(by_step)].get("tokens_seen", 0)),
        checkpoints=sorted(lab.params.eval.checkpoints),
        tasks=list(lab.params.eval.tasks),
    )
    for step in report.checkpoints:
        for task in report.tasks:
            path = lab.downstream(step, task) / "results.parquet"
            if not path.is_file():
                report.missing.append(str(path.parent.relative_to(lab.repo)))
                continue
            acc = [r["value"] for r in _read_rows(path) if r["metric"] == "acc"]
            if acc:
                report.accuracy[step, task] = float(acc[0])
            else:
                report.missing.append(f"{path.relative_to(lab.repo)} (no acc row)")
        path = lab.perplexity(step) / "results.parquet"
        if not path.is_file():
            report.missing.append(str(path.parent.relative_to(lab.repo)))
            continue
        for row in _read_rows(path):
            if row["metric"] in PERPLEXITY_METRICS and row.get("domain") is None:
                values = report.perplexity.setdefault((step, row["source"]), {})
                values[row["metric"]] = float(row["value"])
    return report


def _metrics_json(report: ModelReport) -> dict[str, Any]:
    last = max(report.losses) if report.losses else None
    train: dict[str, Any] = {
        "steps": len(report.losses),
        "tokens_seen": report.tokens_seen,
        "final_loss": _rounded(report.losses[last], 4) if last is not None else None,
        "min_loss": _rounded(min(report.losses.values()), 4) if report.losses else None,
    }
    if report.eval_losses:
        train["final_eval_loss"] = _rounded(report.eval_losses[max(report.eval_losses)], 4)
    evaluation: dict[str, Any] = {}
    for step in report.checkpoints:
        row: dict[str, Any] = {
            t: _rounded(report.accuracy[step, t], 4)
            for t in report.tasks
            if (step, t) in report.accuracy
        }
        if row:
            row["mean"] = _rounded(report.mean_accuracy(step), 4)
            evaluation[f"step{step:06d}"] = row
    perplexity: dict[str, Any] = {}
    for (step, source), values in sorted(report.perplexity.items()):
        perplexity.setdefault(f"step{step:06d}", {})[source] = {
            "perplexity": _rounded(values.get("perplexity", math.nan), 2),
            "bits_per_byte": _rounded(values.get("bits_per_byte", math.nan), 4),
        }
    return {"train": train, "eval": evaluation, "perplexity": perplexity}


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(["" if v is None else v for v in row] for row in rows)


def eval_table_rows(report: ModelReport) -> list[dict[str, Any]]:
    steps = sorted({step for step, _ in report.accuracy})
    return [
        {"step": step} | {task: report.accuracy.get((step, task)) for task in report.tasks}
        for step in steps
    ]


def _accuracy_series(report: ModelReport, task: str) -> tuple[list[int], list[float]]:
    """The checkpoints that scored ``task`` and their accuracies, by step."""
    steps = [step for step in report.checkpoints if (step, task) in report.accuracy]
    return steps, [report.accuracy[step, task] for step in steps]


def _plot(
    path: Path, title: str, ylabel: str, lines: dict[str, tuple[list[int], list[float]]]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    many = len(lines) > 3  # a legend beside the axes, so it hides no points
    fig, ax = plt.subplots(figsize=(8.5 if many else 7, 4))
    for label, (x, y) in lines.items():
        ax.plot(x, y, marker="o" if len(x) <= 20 else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if many:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    elif len(lines) > 1:
        ax.legend(fontsize="small")
    fig.tight_layout()
    # No "Software" entry: the bytes depend on the data, not on matplotlib's version string.
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def write_model_report(report: ModelReport, folder: Path) -> dict[str, Path]:
    """Write the report's files into ``folder``; returns its plots by name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "metrics.json").write_text(
        json.dumps(_metrics_json(report), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    _write_csv(
        folder / "loss.csv",
        ["step", "loss", "eval_loss"],
        [[s, repr(loss), report.eval_losses.get(s)] for s, loss in report.losses.items()],
    )
    _write_csv(
        folder / "eval_by_step.csv",
        ["step", "task", "acc"],
        [
            [step, task, repr(acc)]
            for task in report.tasks
            for step, acc in zip(*_accuracy_series(report, task), strict=True)
        ],
    )
    table = eval_table_rows(report)
    _write_csv(
        folder / "acc_by_step.csv",
        ["step", *report.tasks],
        [[row["step"], *(row[t] for t in report.tasks)] for row in table],
    )
    _write_csv(
        folder / "perplexity.csv",
        ["step", "source", *PERPLEXITY_METRICS],
        [
            [step, source, *(values.get(m) for m in PERPLEXITY_METRICS)]
            for (step, source), values in sorted(report.perplexity.items())
        ],
    )
    schema = pa.schema([("step", pa.int64()), *((t, pa.float64()) for t in report.tasks)])
    pq.write_table(pa.Table.from_pylist(table, schema=schema), folder / "eval_table.parquet")

    images = {"loss": folder / "loss.png"}
    loss_lines = {"train": (list(report.losses), list(report.losses.values()))}
    if report.eval_losses:
        loss_lines["validation"] = (list(report.eval_losses), list(report.eval_losses.values()))
    _plot(images["loss"], "Training loss", "loss", loss_lines)
    if report.accuracy:
        images["acc_by_step"] = folder / "acc_by_step.png"
        _plot(
            images["acc_by_step"],
            "Downstream accuracy by checkpoint",
            "acc",
            {task: _accuracy_series(report, task) for task in report.tasks},
        )
    if report.perplexity:
        images["bits_per_byte"] = folder / "bits_per_byte.png"
        lines: dict[str, tuple[list[int], list[float]]] = {}
        for (step, source), values in sorted(report.perplexity.items(), key=lambda i: i[0][::-1]):
            x, y = lines.setdefault(source, ([], []))
            x.append(step)
            y.append(values.get("bits_per_byte", math.nan))
        _plot(
            images["bits_per_byte"],
            "Bits per byte on the validation splits",
            "bits per byte",
            lines,
        )
    return images
