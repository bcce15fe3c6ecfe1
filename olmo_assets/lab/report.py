"""The model report: training loss and evaluation scores by checkpoint, as files DVC reads.

:func:`collect_model_report` gathers the losses of ``lab/runs/train/metrics.jsonl`` and the
results of every evaluation ``params.yaml`` asks for; :func:`write_model_report` writes:

* ``metrics.json``: ``dvc metrics show`` — final losses (the last step's, and the mean over
  the last tenth of the run), each task's main score per checkpoint (``eval``; with their
  ``mean`` and MMLU's averages and each suite's score where the tasks hold all of it) with
  its standard error (``eval_stderr``), perplexity and bits per byte per checkpoint and
  source;
* ``loss.csv`` (``step,loss,loss_smoothed,eval_loss``), ``eval_by_step.csv``
  (``step,task,metric,score,stderr,chance``), ``acc_by_step.csv`` (``step``, one column per
  task, its main score: one line per task in ``dvc plots``, then one per group score,
  :func:`group_series`, which ``dvc.yaml``'s plot leaves out as it lists ``eval.tasks``) and
  ``perplexity.csv`` (``step,source,perplexity,bits_per_byte``);
* ``eval_table.parquet``: the evaluation table, one row per task (then their mean, then the
  group scores) with its main metric, normalization, chance level and examples, and per
  checkpoint ``step<N>_acc`` and ``step<N>_stderr`` (:func:`eval_table_rows`);
* ``loss.png`` (raw train loss faint, smoothed train loss, validation loss),
  ``acc_by_step.png`` (a panel per task: accuracy ± standard error by checkpoint, chance
  dashed; a panel per group score, MMLU's averages standing in for its subjects' panels) and
  ``bits_per_byte.png``.

The ``mean`` (:meth:`ModelReport.mean_accuracy`) averages the ranked tasks' ``acc``, MMLU
counting once per format (its macro average over the subjects scored), so that it is an
accuracy and 57 subjects do not outweigh the other tasks; generative tasks are left out of it.

A task's main score is its main metric's value (:func:`olmo_nn.eval.tasks.primary_metric`):
``acc`` for a ranked task, ``f1`` or ``exact_match`` for a generative one (nq_open,
triviaqa, basic_arithmetic). Tasks are named by their partition keys (``arc_easy-mc``,
:func:`olmo_nn.eval.formats.partition_key`), and so are MMLU's averages and the suites' scores
(``mmlu-mc``).

The report is a function of the losses and the results alone: throughput and other timings
in ``metrics.jsonl`` are left out and nothing carries a timestamp, so the same run gives the
same bytes (DVC sees no change on a rerun).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olmo_assets.lab.params import Lab

__all__ = [
    "ModelReport",
    "collect_model_report",
    "curve_window",
    "eval_table_rows",
    "eval_table_shown",
    "final_loss_window",
    "group_series",
    "moving_average",
    "plot_loss",
    "smoothed_final_loss",
    "write_model_report",
]

PERPLEXITY_METRICS = ("perplexity", "bits_per_byte")
FINAL_LOSS_FRACTION = 0.1
FINAL_LOSS_MIN_STEPS = 10
CURVE_POINTS = 20
"""The loss curve is smoothed over ``steps // CURVE_POINTS`` steps (a trailing mean)."""
MEAN = "mean"
"""The row of the evaluation table averaging the ranked tasks (:meth:`ModelReport.mean_accuracy`)."""
RESULTS = "results.parquet"
"""The file of an evaluation's results in its folder."""


def final_loss_window(num_steps: int) -> int:
    """How many last steps the smoothed final loss averages: 10% of the run, at least 10."""
    return min(num_steps, max(FINAL_LOSS_MIN_STEPS, math.ceil(num_steps * FINAL_LOSS_FRACTION)))


def smoothed_final_loss(losses: dict[int, float]) -> tuple[float, str]:
    """The mean loss over the last :func:`final_loss_window` steps, and which steps those are
    (``steps 271–300 (the last 30 of 300: 10% of the run, at least 10 steps)``)."""
    steps = sorted(losses)
    window = steps[-final_loss_window(len(steps)) :]
    mean = sum(losses[s] for s in window) / len(window)
    if len(window) == len(steps):
        return mean, f"steps {window[0]}–{window[-1]} (all {len(steps)}: a run this short)"
    return mean, (
        f"steps {window[0]}–{window[-1]} (the last {len(window)} of {len(steps)}: "
        f"{FINAL_LOSS_FRACTION:.0%} of the run, at least {FINAL_LOSS_MIN_STEPS} steps)"
    )


def moving_average(values: list[float], window: int) -> list[float]:
    """The trailing mean of ``values`` over ``window`` points (fewer at the start)."""
    averaged, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        averaged.append(total / min(i + 1, window))
    return averaged


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
    """The task's main score by (checkpoint step, task): ``acc`` (its default
    normalization's) for a ranked task, :attr:`metric` for a generative one."""
    stderr: dict[tuple[int, str], float] = field(default_factory=dict)
    """The main score's standard error by (checkpoint step, task)."""
    metric: dict[str, str] = field(default_factory=dict)
    """Each task's main metric (``acc`` where absent; ``f1``, ``exact_match``)."""
    chance: dict[str, float] = field(default_factory=dict)
    """The chance level of each task (mean over its examples of 1 / number of choices)."""
    examples: dict[str, int] = field(default_factory=dict)
    """How many examples each task scored."""
    normalization: dict[str, str] = field(default_factory=dict)
    """The normalization ``acc`` uses for each task (OLMo's choice)."""
    perplexity: dict[tuple[int, str], dict[str, float]] = field(default_factory=dict)
    """``{metric: value}`` by (checkpoint step, validation source)."""
    missing: list[str] = field(default_factory=list)
    """Evaluation folders params.yaml asks for that hold no result yet."""

    def mean_members(self) -> dict[str, list[str]]:
        """What the mean row averages, by name: each ranked task (main metric ``acc``) on its
        own, and MMLU's subjects of one format as one member (``mmlu``, ``mmlu-mc``: their
        macro average), so 57 subjects weigh as much as one task. Generative tasks are in
        none: an F1 or exact match averaged with accuracies would mean nothing (their scores
        stay in their own rows)."""
        from olmo_nn.eval.formats import partition_key, task_of_partition
        from olmo_nn.eval.mmlu import subject_of

        members: dict[str, list[str]] = {}
        for task in self.tasks:
            if self.metric.get(task, "acc") != "acc":
                continue
            name = task_of_partition(task)
            if subject_of(name) is None:
                members.setdefault(task, []).append(task)
            else:
                suffix = name[name.index(":") :] if ":" in name else ""
                members.setdefault(partition_key("mmlu" + suffix), []).append(task)
        # Subjects in aggregate_rows's order, so MMLU's member is exactly its `mmlu` row.
        return {name: sorted(tasks) for name, tasks in members.items()}

    def _mean_terms(self, step: int) -> list[list[str]]:
        """The members of :meth:`mean_members` scored at ``step``: each its tasks scored."""
        terms = [[t for t in tasks if (step, t) in self.accuracy]
                 for tasks in self.mean_members().values()]  # fmt: skip
        return [scored for scored in terms if scored]

    def mean_accuracy(self, step: int) -> float:
        """The mean row: the mean over :meth:`mean_members` scored at checkpoint ``step`` of
        each one's ``acc`` (MMLU's: the mean over its subjects scored); NaN when none was."""
        scores = [
            sum(self.accuracy[step, t] for t in tasks) / len(tasks)
            for tasks in self._mean_terms(step)
        ]
        return sum(scores) / len(scores) if scores else math.nan

    def mean_stderr(self, step: int) -> float:
        """The standard error of :meth:`mean_accuracy`, every task and subject independent:
        sqrt(Σ v) / k over its k members, v a task's se² and MMLU's Σ se² / n² over its n
        subjects (the standard error of their mean); NaN where a task has none."""
        variances = []
        for tasks in self._mean_terms(step):
            errors = [self.stderr.get((step, t), math.nan) for t in tasks]
            variances.append(sum(e * e for e in errors) / len(errors) ** 2)
        return math.sqrt(sum(variances)) / len(variances) if variances else math.nan

    def group_scores(self, step: int) -> dict[str, float]:
        """MMLU's averages over its subjects among the tasks (``mmlu``, ``mmlu_<category>``,
        when any subject was scored) and the score of each suite all of whose tasks were
        scored at ``step`` (:func:`olmo_nn.eval.suites.suite_rows`), by partition key
        (``mmlu-mc``). Only ``acc`` counts (a generative task's F1 is in no suite); a suite
        whose score is the mean row (its tasks are the report's, none of them MMLU's: the
        demo's ``core9``) is left out."""
        from olmo_nn.eval.formats import partition_key, task_of_partition
        from olmo_nn.eval.mmlu import aggregate_rows, subject_of
        from olmo_nn.eval.suites import SUITES, expand_suites, suite_rows

        names = {task_of_partition(t) for t in self.tasks}
        rows = [
            {"task": task_of_partition(t), "metric": "acc", "value": self.accuracy[step, t],
             "count": self.examples.get(t, 0)}
            for t in self.tasks
            if (step, t) in self.accuracy and self.metric.get(t, "acc") == "acc"
        ]  # fmt: skip
        suites = [
            suite
            for suite, members in ((s, expand_suites(s)) for s in SUITES if s != "mmlu")
            if set(members) != names or any(subject_of(m) for m in members)
        ]
        groups = aggregate_rows(rows)
        groups += suite_rows(rows + groups, suites)
        return {
            partition_key(str(r["task"])): float(r["value"]) for r in groups if r["metric"] == "acc"
        }

    def mean_chance(self) -> float:
        """The mean row's chance level: over :meth:`mean_members` as :meth:`mean_accuracy`
        (MMLU's: the mean over its subjects), the tasks with a chance level."""
        terms = [[self.chance[t] for t in tasks if t in self.chance]
                 for tasks in self.mean_members().values()]  # fmt: skip
        chances = [sum(values) / len(values) for values in terms if values]
        return sum(chances) / len(chances) if chances else math.nan


def _rounded(value: float, digits: int) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


def _read_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def evaluation_folders(lab: Lab, step: int) -> list[Path]:
    """Where checkpoint ``step``'s evaluations go: each task's, then its perplexity's."""
    return [
        *(lab.downstream(step, task) for task in lab.params.eval.tasks),
        lab.perplexity(step),
    ]


def evaluated(lab: Lab, step: int) -> bool:
    """Whether every evaluation of checkpoint ``step`` has its results."""
    return all((folder / RESULTS).is_file() for folder in evaluation_folders(lab, step))


def kept_checkpoints(lab: Lab) -> list[int]:
    """The steps of the training run's unsharded checkpoints, complete (each appears under its
    name only once written), in order."""
    found = (lab.run_dir / "checkpoints").glob("step*-unsharded")
    steps = (p.name.removeprefix("step").removesuffix("-unsharded") for p in found)
    return sorted(int(step) for step in steps if step.isdigit())


def report_checkpoints(lab: Lab) -> tuple[list[int], list[int]]:
    """The checkpoints the model report covers, and those still being evaluated: with
    ``eval.continuous`` the kept checkpoints whose evaluations are all done, and the others
    recorded so far; else ``eval.checkpoints``, and none. Under ``dvc repro`` (which sets
    ``DVC_STAGE`` for a stage's command) always ``eval.checkpoints``: the inputs DVC tracks."""
    if not lab.params.eval.continuous or os.environ.get("DVC_STAGE"):
        return sorted(lab.params.eval.checkpoints), []
    kept = [step for step in kept_checkpoints(lab) if lab.checkpoint_record(step).is_dir()]
    done = [step for step in kept if evaluated(lab, step)]
    return done, [step for step in kept if step not in done]


def collect_model_report(lab: Lab, checkpoints: list[int] | None = None) -> ModelReport:
    """The losses and the results of ``checkpoints`` (default: the report's,
    :func:`report_checkpoints`) × ``eval.tasks`` (and perplexity)."""
    from olmo_nn.eval.formats import task_of_partition
    from olmo_nn.eval.generative import generative_spec
    from olmo_nn.eval.tasks import get_task_spec, primary_metric
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
        checkpoints=report_checkpoints(lab)[0] if checkpoints is None else checkpoints,
        tasks=list(lab.params.eval.tasks),
    )
    for task in report.tasks:
        name = task_of_partition(task)
        report.metric[task] = primary_metric(name)
        if generative_spec(name) is None:
            report.normalization[task] = get_task_spec(name).default_normalization
    for step in report.checkpoints:
        for task in report.tasks:
            path = lab.downstream(step, task) / RESULTS
            if not path.is_file():
                report.missing.append(str(path.parent.relative_to(lab.repo)))
                continue
            rows = {r["metric"]: r for r in _read_rows(path)}
            metric = report.metric[task]
            if metric not in rows:
                report.missing.append(f"{path.relative_to(lab.repo)} (no {metric} row)")
                continue
            report.accuracy[step, task] = float(rows[metric]["value"])
            report.examples[task] = int(rows[metric]["count"])
            if f"{metric}_stderr" in rows:
                report.stderr[step, task] = float(rows[f"{metric}_stderr"]["value"])
            if "chance" in rows:
                report.chance[task] = float(rows["chance"]["value"])
        path = lab.perplexity(step) / RESULTS
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
        "final_loss_smoothed": (
            _rounded(smoothed_final_loss(report.losses)[0], 4) if report.losses else None
        ),
        "min_loss": _rounded(min(report.losses.values()), 4) if report.losses else None,
    }
    if report.eval_losses:
        train["final_eval_loss"] = _rounded(report.eval_losses[max(report.eval_losses)], 4)
    evaluation: dict[str, Any] = {}
    stderr: dict[str, Any] = {}
    for step in report.checkpoints:
        scored = [t for t in report.tasks if (step, t) in report.accuracy]
        if scored:
            label = f"step{step:06d}"
            evaluation[label] = {t: _rounded(report.accuracy[step, t], 4) for t in scored}
            evaluation[label][MEAN] = _rounded(report.mean_accuracy(step), 4)
            for group, value in report.group_scores(step).items():
                evaluation[label][group] = _rounded(value, 4)
            stderr[label] = {t: _rounded(report.stderr.get((step, t), math.nan), 4) for t in scored}
            stderr[label][MEAN] = _rounded(report.mean_stderr(step), 4)
    perplexity: dict[str, Any] = {}
    for (step, source), values in sorted(report.perplexity.items()):
        perplexity.setdefault(f"step{step:06d}", {})[source] = {
            "perplexity": _rounded(values.get("perplexity", math.nan), 2),
            "bits_per_byte": _rounded(values.get("bits_per_byte", math.nan), 4),
        }
    return {
        "checkpoints": [f"step{step:06d}" for step in report.checkpoints],
        "train": train,
        "eval": evaluation,
        "eval_stderr": stderr,
        "perplexity": perplexity,
    }


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(["" if v is None else v for v in row] for row in rows)


def _scored_steps(report: ModelReport) -> list[int]:
    return sorted({step for step, _ in report.accuracy})


def eval_table_rows(report: ModelReport) -> list[dict[str, Any]]:
    """The evaluation table: a row per task (every one of ``eval.tasks``) and their mean
    (:meth:`ModelReport.mean_accuracy`); its
    main metric, normalization, chance level and examples, then per scored checkpoint
    ``step<N>_acc`` (its main score) and ``step<N>_stderr`` (None where a task has no result
    at that checkpoint); then MMLU's
    averages and the suites' scores where the tasks hold them (:meth:`ModelReport.group_scores`)."""
    steps = _scored_steps(report)
    rows = []
    for task in report.tasks:
        row: dict[str, Any] = {
            "task": task,
            "metric": report.metric.get(task, "acc"),
            "normalization": report.normalization.get(task),
            "chance": report.chance.get(task),
            "examples": report.examples.get(task),
        }
        for step in steps:
            row[f"step{step}_acc"] = report.accuracy.get((step, task))
            row[f"step{step}_stderr"] = report.stderr.get((step, task))
        rows.append(row)
    mean: dict[str, Any] = {
        "task": MEAN,
        "metric": None,
        "normalization": None,
        "chance": _finite_or_none(report.mean_chance()),
        "examples": None,
    }
    for step in steps:
        mean[f"step{step}_acc"] = _finite_or_none(report.mean_accuracy(step))
        mean[f"step{step}_stderr"] = _finite_or_none(report.mean_stderr(step))
    groups: dict[str, dict[str, Any]] = {}
    for step in steps:
        for group, value in report.group_scores(step).items():
            entry = groups.setdefault(
                group,
                {"task": group, "metric": "acc", "normalization": None, "chance": None,
                 "examples": None},
            )  # fmt: skip
            entry[f"step{step}_acc"] = _finite_or_none(value)
            entry[f"step{step}_stderr"] = None
    for entry in groups.values():
        for step in steps:
            entry.setdefault(f"step{step}_acc", None)
            entry.setdefault(f"step{step}_stderr", None)
    return [*rows, mean, *groups.values()]


def eval_table_shown(report: ModelReport) -> list[dict[str, Any]]:
    """:func:`eval_table_rows` narrowed for a page: per task its main metric, normalization,
    chance level and, per scored checkpoint, ``score ± stderr`` as text (``0.275 ± 0.071``)."""
    steps = _scored_steps(report)
    shown = []
    for row in eval_table_rows(report):
        cells: dict[str, Any] = {k: row[k] for k in ("task", "metric", "normalization", "chance")}
        for step in steps:
            acc, stderr = row[f"step{step}_acc"], row[f"step{step}_stderr"]
            cells[f"step {step}"] = (
                None
                if acc is None
                else f"{acc:.3f}" + ("" if stderr is None else f" ± {stderr:.3f}")
            )
        shown.append(cells)
    return shown


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _eval_table_schema(report: ModelReport) -> Any:
    import pyarrow as pa

    columns = [
        ("task", pa.string()),
        ("metric", pa.string()),
        ("normalization", pa.string()),
        ("chance", pa.float64()),
        ("examples", pa.int64()),
    ]
    for step in _scored_steps(report):
        columns += [(f"step{step}_acc", pa.float64()), (f"step{step}_stderr", pa.float64())]
    return pa.schema(columns)


def group_series(report: ModelReport) -> dict[str, dict[int, float]]:
    """Each of :meth:`ModelReport.group_scores` by checkpoint, in the order they first appear."""
    series: dict[str, dict[int, float]] = {}
    for step in _scored_steps(report):
        for group, value in report.group_scores(step).items():
            series.setdefault(group, {})[step] = value
    return series


def _accuracy_series(report: ModelReport, task: str) -> tuple[list[int], list[float]]:
    """The checkpoints that scored ``task`` and their main scores, by step."""
    steps = [step for step in report.checkpoints if (step, task) in report.accuracy]
    return steps, [report.accuracy[step, task] for step in steps]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    # No "Software" entry: the bytes depend on the data, not on matplotlib's version string.
    fig.savefig(path, metadata={"Software": None})
    _pyplot().close(fig)


def _plot(
    path: Path, title: str, ylabel: str, lines: dict[str, tuple[list[int], list[float]]]
) -> None:
    plt = _pyplot()
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
    _save(fig, path)


def curve_window(num_steps: int) -> int:
    """The trailing mean's window in the loss plot: about :data:`CURVE_POINTS` per curve."""
    return max(1, num_steps // CURVE_POINTS)


def plot_loss(losses: dict[int, float], eval_losses: dict[int, float], path: Path) -> None:
    """The raw train loss faint, its trailing mean, and the in-loop validation loss."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    steps, values = list(losses), list(losses.values())
    window = curve_window(len(losses))
    ax.plot(steps, values, color="tab:blue", alpha=0.25, linewidth=0.8, label="train (raw)")
    if window > 1:
        ax.plot(
            steps,
            moving_average(values, window),
            color="tab:blue",
            label=f"train (mean of the last {window} steps)",
        )
    if eval_losses:
        ax.plot(
            list(eval_losses),
            list(eval_losses.values()),
            color="tab:orange",
            marker="o",
            label="validation (in-loop)",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    _save(fig, path)


def _plot_accuracy(report: ModelReport, path: Path) -> None:
    """A panel per task: its main score (``acc``; ``f1``, ``exact_match`` for a generative
    task) ± standard error by checkpoint, its chance level dashed; then a panel per group
    score (:func:`group_series`: MMLU's averages, the suites'), which stand in for the MMLU
    subjects' own panels (57 of them would bury the rest; ``acc_by_step.csv`` keeps them)."""
    from olmo_nn.eval.formats import task_of_partition
    from olmo_nn.eval.mmlu import subject_of

    plt = _pyplot()
    groups = group_series(report)
    tasks = [
        t
        for t in report.tasks
        if _accuracy_series(report, t)[0] and not (groups and subject_of(task_of_partition(t)))
    ]
    panels = len(tasks) + len(groups)
    columns = min(3, panels)
    rows = math.ceil(panels / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.6 * columns, 2.8 * rows), squeeze=False, sharex=True
    )
    for ax, task in zip(axes.flat, tasks, strict=False):
        steps, accuracy = _accuracy_series(report, task)
        errors = [report.stderr.get((s, task), math.nan) for s in steps]
        ax.errorbar(steps, accuracy, yerr=errors, marker="o", capsize=3, label="acc ± stderr")
        if task in report.chance:
            ax.axhline(report.chance[task], color="gray", linestyle="--", label="chance")
        # A ranked task's normalization; a generative task's metric (it has no normalization).
        shown = report.normalization.get(task) or report.metric.get(task, "?")
        ax.set_title(f"{task} ({shown})", fontsize="medium")
        ax.grid(alpha=0.3)
    for ax, (group, scores) in zip(axes.flat[len(tasks) :], groups.items(), strict=False):
        ax.plot(list(scores), list(scores.values()), marker="o", color="tab:green")
        ax.set_title(f"{group} (average)", fontsize="medium")
        ax.grid(alpha=0.3)
    for ax in axes.flat[panels:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    only_acc = all(report.metric.get(t, "acc") == "acc" for t in tasks)
    for ax in axes[:, 0]:
        ax.set_ylabel("acc" if only_acc else "score")
    if tasks:
        axes.flat[0].legend(fontsize="x-small")
    # Wrapped in a figure one panel wide, so the title never runs past its edges.
    title = (
        f"Downstream {'accuracy' if only_acc else 'scores'} by checkpoint "
        "(± standard error; chance dashed)"
    )
    fig.suptitle(title if columns > 1 else title.replace(" (", "\n("), fontsize="medium")
    _save(fig, path)


def write_model_report(report: ModelReport, folder: Path) -> dict[str, Path]:
    """Write the report's files into ``folder``; returns its plots by name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "metrics.json").write_text(
        json.dumps(_metrics_json(report), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    smoothed = moving_average(list(report.losses.values()), curve_window(len(report.losses)))
    _write_csv(
        folder / "loss.csv",
        ["step", "loss", "loss_smoothed", "eval_loss"],
        [
            [s, repr(loss), repr(mean), report.eval_losses.get(s)]
            for (s, loss), mean in zip(report.losses.items(), smoothed, strict=True)
        ],
    )
    _write_csv(
        folder / "eval_by_step.csv",
        ["step", "task", "metric", "score", "stderr", "chance"],
        [
            [
                step,
                task,
                report.metric.get(task, "acc"),
                repr(acc),
                repr(report.stderr[step, task]) if (step, task) in report.stderr else None,
                repr(report.chance[task]) if task in report.chance else None,
            ]
            for task in report.tasks
            for step, acc in zip(*_accuracy_series(report, task), strict=True)
        ],
    )
    groups = group_series(report)
    _write_csv(
        folder / "acc_by_step.csv",
        ["step", *report.tasks, *groups],
        [
            [
                step,
                *(report.accuracy.get((step, t)) for t in report.tasks),
                *(scores.get(step) for scores in groups.values()),
            ]
            for step in _scored_steps(report)
        ],
    )
    _write_csv(
        folder / "perplexity.csv",
        ["step", "source", *PERPLEXITY_METRICS],
        [
            [step, source, *(values.get(m) for m in PERPLEXITY_METRICS)]
            for (step, source), values in sorted(report.perplexity.items())
        ],
    )
    pq.write_table(
        pa.Table.from_pylist(eval_table_rows(report), schema=_eval_table_schema(report)),
        folder / "eval_table.parquet",
    )

    images = {"loss": folder / "loss.png"}
    plot_loss(report.losses, report.eval_losses, images["loss"])
    if report.accuracy:
        images["acc_by_step"] = folder / "acc_by_step.png"
        _plot_accuracy(report, images["acc_by_step"])
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
