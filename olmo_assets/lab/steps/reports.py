"""Report steps: the curated corpus (WIMBD-style) and the model (loss and scores by step)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from olmo_assets.lab.params import Lab
from olmo_assets.lab.steps.results import CheckResult, StepResult
from olmo_nn.atomic import staged_folder

if TYPE_CHECKING:
    from olmo_assets.lab.report import ModelReport

__all__ = ["corpus_report", "model_report", "model_report_complete"]


def corpus_report(lab: Lab) -> StepResult:
    """The curated corpus, WIMBD-style: DuckDB tables and plots."""
    from olmo_assets.curation.report import build_report
    from olmo_assets.lab.tracking import log_corpus_report

    started_ms = int(time.time() * 1000)
    with staged_folder(lab.corpus_report) as staged:
        staged.mkdir()
        tables = build_report(lab.curated, destination=staged)
    shown = {
        name: rows
        for name, rows in tables.items()
        if isinstance(rows, list) and rows and isinstance(rows[0], dict)
    }
    images = {p.stem: p for p in sorted(lab.corpus_report.glob("*.png"))}
    run_id = log_corpus_report(lab, lab.corpus_report, started_ms)
    return StepResult({"tables": len(shown), "mlflow_run_id": run_id}, shown, images)


def model_report(lab: Lab) -> StepResult:
    """Loss and evaluation scores by checkpoint: ``metrics.json``, CSVs, a table, plots; the
    files are attached to the training run in MLflow, and its per-task scores logged there
    by step (``downstream/<task>/acc``: a curve per task)."""
    from olmo_assets.lab.report import (
        collect_model_report,
        eval_table_shown,
        report_checkpoints,
        smoothed_final_loss,
        write_model_report,
    )
    from olmo_assets.lab.steps.evaluation import accuracy_text
    from olmo_assets.lab.tracking import log_report

    covered, pending = report_checkpoints(lab)
    report = collect_model_report(lab, covered)
    with staged_folder(lab.model_report) as staged:
        staged.mkdir()
        write_model_report(report, staged)
    run_id = log_report(lab, lab.model_report, _metrics_by_step(report))
    metadata: dict[str, Any] = {"steps": len(report.losses)}
    if report.losses:
        smoothed, window = smoothed_final_loss(report.losses)
        last = max(report.losses)
        metadata |= {
            "final_loss_smoothed": smoothed,
            "final_loss_window": f"mean of the train loss over {window}",
            "raw_final_loss": f"{report.losses[last]:.4f} at step {last} (one step: noisy)",
        }
    final = max(report.checkpoints, default=0)
    members = report.mean_members()
    averaged = [t for tasks in members.values() for t in tasks]
    metadata |= {
        "results": len(report.accuracy) + len({s for s, _ in report.perplexity}),
        "final_mean_acc": report.mean_accuracy(final),
        "final_mean_accuracy": accuracy_text(
            report.mean_accuracy(final),
            report.mean_stderr(final),
            report.mean_chance(),
            sum(report.examples.get(t, 0) for t in averaged),
        )
        + f" at step {final}, mean of {len(members)} tasks"
        + (" (MMLU's subjects as one)" if len(averaged) > len(members) else ""),
        "mlflow_run_id": run_id or "",
    }
    if lab.params.eval.continuous:
        metadata["checkpoints"] = ", ".join(map(str, report.checkpoints)) or "none yet"
        metadata["being_evaluated"] = ", ".join(map(str, pending)) or "none"
    return StepResult(
        metadata,
        {"evaluation": eval_table_shown(report)},
        {p.stem: p for p in sorted(lab.model_report.glob("*.png"))},
    )


def _metrics_by_step(report: ModelReport) -> dict[int, dict[str, float]]:
    """The report's scores under the evaluation runs' MLflow keys, by checkpoint step."""
    from olmo_assets.lab.tracking import downstream_key, perplexity_key

    by_step: dict[int, dict[str, float]] = {}
    for (step, task), score in report.accuracy.items():
        metric = report.metric.get(task, "acc")  # the task's main metric: acc, f1, exact_match
        by_step.setdefault(step, {})[downstream_key(task, metric)] = score
        if (step, task) in report.stderr:
            by_step[step][downstream_key(task, f"{metric}_stderr")] = report.stderr[step, task]
    for (step, source), values in report.perplexity.items():
        for metric, value in values.items():
            by_step.setdefault(step, {})[perplexity_key(source, metric)] = value
    return by_step


def model_report_complete(lab: Lab) -> CheckResult:
    """``metrics.json`` has a finite accuracy for every checkpoint × task the report covers
    and a perplexity for every such checkpoint (read back from the report's own file, which
    writes a value that is not finite as null); with ``eval.continuous``, it covers at least
    one checkpoint."""
    import json

    metrics = json.loads((lab.model_report / "metrics.json").read_text(encoding="utf-8"))
    checkpoints = list(lab.params.eval.checkpoints)
    missing = []
    if lab.params.eval.continuous:
        # The checkpoints the report covered: more may have been evaluated since.
        checkpoints = [int(label.removeprefix("step")) for label in metrics["checkpoints"]]
        missing = [] if checkpoints else ["no checkpoint evaluated yet"]
    for step in checkpoints:
        label = f"step{step:06d}"
        scores = metrics.get("eval", {}).get(label, {})
        missing += [
            f"{label}/{task}"
            for task in lab.params.eval.tasks
            if not isinstance(scores.get(task), int | float)
        ]
        if not metrics.get("perplexity", {}).get(label):
            missing.append(f"{label}/perplexity")
    expected = len(checkpoints) * (len(lab.params.eval.tasks) + 1)
    return CheckResult(
        not missing, {"expected": expected, "missing": ", ".join(missing[:10]) or "none"}
    )
