"""One process of the shared-state load test: evaluation materializations, all at once.

    python tests/olmo_assets/lab/evaluations_at_once.py GO_FILE OUTCOMES STAGE:PARTITION...

On the lab at ``OLMO_LAB_REPO``, its Dagster instance (``dagster_instance``: SQLite, or
PostgreSQL with ``OLMO_LAB_DATABASE_URL``) and its MLflow store, each argument is one
materialization of the stage's asset at the partition (``downstream:2|arc_easy``,
``perplexity:4``), launched through Pipes as the UI launches them. Each runs in a process of
its own, forked from this one, as Dagster runs each run in its own process (its in-process
execution is not thread-safe: two runs in threads deadlock on the logging lock).
The process writes ``GO_FILE.ready.<pid>`` once loaded and starts when ``GO_FILE`` exists,
so that two processes start together; it writes a JSON line per materialization to the file
``OUTCOMES`` (its standard output is the stages' own).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from dagster import PipesSubprocessClient, materialize

from olmo_assets.defs.assets import STAGE_CLIENT, build_assets, launch
from olmo_assets.defs.location import stage_environment
from olmo_assets.defs.record import dagster_instance
from olmo_assets.lab.params import Lab
from olmo_assets.lab.pipeline import stage_named

ASSETS = {"downstream": "downstream_eval", "perplexity": "perplexity_eval"}


def materialize_one(spec: str) -> dict[str, Any]:
    """One materialization, on the instance and store the environment names."""
    lab = Lab.load()
    env = stage_environment(lab)
    assets = build_assets(lab, launch(env), frozenset({STAGE_CLIENT}))
    by_key = {key.to_user_string(): a for a in assets for key in a.keys}
    resources = {STAGE_CLIENT: PipesSubprocessClient(env=env, cwd=str(lab.repo))}
    stage, partition = spec.split(":", 1)
    assert stage_named(stage).writes[0].name == ASSETS[stage]
    result = materialize(
        [by_key[ASSETS[stage]]],
        instance=dagster_instance(lab),
        resources=resources,
        partition_key=partition,
        tags={"olmo/load_test": str(os.getppid())},
    )
    events = result.get_asset_materialization_events()
    return {
        "spec": spec,
        "success": result.success,
        "run_id": result.run_id,
        "mlflow_run_ids": [str(e.materialization.metadata["mlflow_run_id"].value) for e in events],
    }


def main(go: Path, outcomes: Path, specs: list[str]) -> None:
    # Forked once everything is imported: the runs start at once, not after their imports.
    with ProcessPoolExecutor(len(specs), mp_context=multiprocessing.get_context("fork")) as pool:
        Path(f"{go}.ready.{os.getpid()}").touch()
        while not go.exists():
            time.sleep(0.05)
        lines = [json.dumps(outcome) + "\n" for outcome in pool.map(materialize_one, specs)]
    outcomes.write_text("".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
