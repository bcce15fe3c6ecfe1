"""`make demo`: the whole lab, materialized through Dagster on embedded defaults.

Every artifact of ``params.yaml``'s pipeline is materialized as a Dagster asset in the
repository's persistent instance (``.dagster/``), each stage run (per source shard,
checkpoint, or checkpoint and task) as soon as the runs it reads are done, two at a time — the order is
derived from the pipeline's declaration (``olmo_assets/lab/pipeline.py``):

1. curation: the raw sources (standard-library code, Python docs, package READMEs,
   multilingual samples; one shard each), the evaluation data, tags per shard, dedup and
   decontamination, the mix and the corpus report; tokenization: the tokenizer and the token
   shards of each source shard;
2. training: the tiny model under ``torchrun`` with in-loop evaluation, every kept checkpoint;
3. evaluation: the nine downstream tasks (subsampled) and perplexity per source on every
   kept checkpoint, then the model report.

Each asset launches the same stage command that ``dvc repro`` runs (Dagster Pipes), which
also commits the stage to DVC: the instance, MLflow (``.mlflow/``), ``dvc.lock`` and the
``lab/`` folders end as a UI materialization would leave them, and ``dvc status`` is clean.
The run ends with a summary table and the commands to open the UIs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _environment() -> None:
    from olmo_assets.lab.database import dagster_home, mlflow_tracking_uri

    # SQLite in the repository, or PostgreSQL with OLMO_LAB_DATABASE_URL (docs/platform.md).
    os.environ.setdefault("DAGSTER_HOME", str(REPO / ".dagster"))
    os.environ["DAGSTER_HOME"] = str(dagster_home(REPO))
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri(REPO)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("OLMO_LAB_REPO", str(REPO))
    (REPO / ".mlflow").mkdir(exist_ok=True)
    Path(os.environ["DAGSTER_HOME"]).mkdir(exist_ok=True)


def _run(lab: Any, runs: list[Any], server: Any, parallel: int) -> dict[str, float]:
    """Launch every stage run in its named job as soon as the runs it reads are done,
    ``parallel`` at a time; print each as it ends, and the steps' progress lines meanwhile."""
    from olmo_assets.defs.server import FINISHED
    from olmo_assets.lab.links import dagster_run_url
    from olmo_assets.lab.pipeline import StageRun, upstream_runs
    from olmo_assets.lab.progress import PREFIX

    needs = {run: set(upstream_runs(lab, run)) for run in runs}
    timings: dict[str, float] = {}
    done: set[StageRun] = set()
    active: dict[StageRun, tuple[str, float, str | None]] = {}  # run id, start, log cursor
    while len(done) < len(runs):
        for run in runs:
            if len(active) >= parallel:
                break
            if run not in done and run not in active and needs[run] <= done:
                tags = {"olmo/demo": "1", "olmo/stage": run.dvc_name}
                active[run] = (server.launch(run, tags), time.perf_counter(), None)
        time.sleep(1.0)
        for run, (run_id, start, cursor) in list(active.items()):
            lines, cursor = server.messages(run_id, cursor)
            active[run] = (run_id, start, cursor)
            for line in lines:
                if line.startswith(PREFIX):
                    print(f"       {run.dvc_name}: {line[len(PREFIX) :]}", flush=True)
            status = server.status(run_id)
            if status not in FINISHED:
                continue
            seconds = time.perf_counter() - start
            del active[run]
            if status != "SUCCESS":
                failures = [line for line in lines if line.startswith("step failed")]
                sys.exit(
                    f"{run.dvc_name} ended {status} after {seconds:.0f}s"
                    + (f": {failures[-1]}" if failures else "")
                    + f"\n  its run, once `make ui` serves the instance: {dagster_run_url(run_id)}"
                )
            done.add(run)
            group = run.stage.group
            timings[group] = timings.get(group, 0.0) + seconds
            print(f"  [{len(done):>2}/{len(runs)}] {run.dvc_name:<34} {seconds:6.1f}s", flush=True)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parallel", type=int, default=2, help="stage runs at once (default 2)")
    args = parser.parse_args()
    _environment()

    from dagster import DagsterInstance

    from olmo_assets.defs.server import dagster_dev
    from olmo_assets.defs.sources import register
    from olmo_assets.lab.params import Lab
    from olmo_assets.lab.pipeline import STAGES, stage_runs

    lab = Lab.load(REPO)
    # The instance's SQLite schema is created (or migrated) here, once, before the
    # webserver, the daemon and the runs open it.
    instance = DagsterInstance.get()
    # The sources' shards, planned and registered as partitions (what `olmo lab shards`
    # and the `new_shards` sensor do): the plan is committed, so this changes nothing
    # unless params.yaml's sources did.
    print(f"shards: {register(lab, instance).summary()}", flush=True)
    runs = [run for stage in STAGES for run in stage_runs(lab, stage)]
    log = Path(os.environ["DAGSTER_HOME"]) / "demo-dagster-dev.log"
    print(
        f"{len(runs)} stage runs, in dependency order, {args.parallel} at a time, each launched "
        f"in its job through `dagster dev` (its output: {log})",
        flush=True,
    )
    total = time.perf_counter()
    with dagster_dev(REPO, log) as server:
        print(f"  Dagster is up at {server.url} while the demo runs", flush=True)
        timings = _run(lab, runs, server, max(1, args.parallel))
    timings["total"] = time.perf_counter() - total
    _summary(lab, instance, timings)


def _latest(instance: Any, key: str, partition: str | None = None) -> dict[str, Any]:
    """The metadata of an asset's (partition's) latest materialization."""
    from dagster import AssetKey, AssetRecordsFilter

    records = instance.fetch_materializations(
        AssetRecordsFilter(
            asset_key=AssetKey.from_user_string(key),
            asset_partitions=[partition] if partition else None,
        ),
        limit=1,
    ).records
    if not records or records[0].asset_materialization is None:
        return {}
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def _summary(lab: Any, instance: Any, timings: dict[str, float]) -> None:
    params = lab.params
    curated = json.loads((lab.curated / "report.json").read_text())
    sources = curated["sources"]
    nan = float("nan")
    train = _latest(instance, "training_run")
    from olmo_assets.lab.steps.tokenization import split_folders

    # Every source shard's training tokens (its token_shards partition).
    tokens = sum(
        json.loads((folder / "manifest.json").read_text())["num_tokens"]
        for folder in split_folders(lab, "train")
    )
    rows: list[tuple[str, str]] = [
        ("raw documents", f"{sum(s['input_records'] for s in sources.values()):,}"),
        (
            "kept / validation / removed / quarantined",
            " / ".join(
                f"{sum(s[k] for s in sources.values()):,}"
                for k in ("kept", "validation", "removed", "quarantined")
            )
            + f"  (accounting adds up: {curated['accounting_ok']})",
        ),
        ("training tokens", f"{tokens:,}"),
        (
            "training loss",
            f"{train.get('raw_first_loss', '?')} -> {train.get('final_loss_smoothed', nan):.3f},"
            f" the {train.get('final_loss_window', '')}",
        ),
        ("MLflow training run", str(train.get("mlflow_run", train.get("mlflow_run_id", "")))),
    ]
    print("\n== summary")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")

    # Accuracy ± standard error per task at each checkpoint: the model report's metrics.json.
    metrics = json.loads((lab.model_report / "metrics.json").read_text())
    header = ["task", *(f"step {s}" for s in params.eval.checkpoints)]
    print("\n  downstream accuracy ± standard error (OLMo's normalization per task, "
          f"{params.eval.limit} examples each):")  # fmt: skip
    print("  " + "".join(f"{h:<18}" for h in header))
    for task in [*params.eval.tasks, "mean"]:
        cells = [task]
        for step in params.eval.checkpoints:
            label = f"step{step:06d}"
            acc = metrics["eval"].get(label, {}).get(task)
            stderr = metrics.get("eval_stderr", {}).get(label, {}).get(task)
            cells.append(
                "–" if acc is None else f"{acc:.3f} ± {nan if stderr is None else stderr:.3f}"
            )
        print("  " + "".join(f"{c:<18}" for c in cells))
    last = params.eval.checkpoints[-1]
    ppl = _latest(instance, "perplexity_eval", str(last))
    bpb = {k.split("/")[0]: v for k, v in ppl.items() if k.endswith("/bits_per_byte")}
    if bpb:
        print(f"\n  bits per byte at step {last}: "
              + ", ".join(f"{s} {v:.3f}" for s, v in sorted(bpb.items())))  # fmt: skip
    print(
        "\n  time (summed over runs per group; total is wall-clock): "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())
    )
    dvc = shutil.which("dvc")
    if dvc:
        status = subprocess.run([dvc, "status", "--quiet"], cwd=lab.repo, check=False)
        print(
            "  DVC: every stage is in dvc.lock, `dvc status` is clean"
            if status.returncode == 0
            else "  DVC: `dvc status` lists changes (see above)"
        )
    print(
        "\nLook around:\n"
        "  make ui          # Dagster (127.0.0.1:3000): asset graph, lineage, metadata, checks;\n"
        "                   # with MLflow (127.0.0.1:5000): the training run, one per evaluation\n"
        '  .venv/bin/olmo query "SELECT source, count(DISTINCT doc_id) FROM batch_documents '
        'GROUP BY source"\n'
        "  .venv-dvc/bin/dvc repro   # the same stages through DVC: nothing to do until you edit\n"
        "                            # params.yaml (`dvc exp run -S eval.limit=100`)\n"
        f"  plots: {lab.model_report}/*.png, {lab.corpus_report}/*.png"
    )


if __name__ == "__main__":
    main()
