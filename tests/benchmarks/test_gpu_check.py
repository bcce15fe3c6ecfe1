"""benchmarks/gpu_check.sh works before device time is spent on it: its dry run on the CPU,
a failing or overrunning part reported while the rest still run, and the throughput script's
arithmetic and report."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def gpu_check(out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, "OUT": str(out), "GPU_CHECK_DRY_RUN": "1",
             "PYTHON": sys.executable, **env},
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip


def bench() -> ModuleType:
    path = ROOT / "benchmarks" / "gpu_train_throughput.py"
    spec = importlib.util.spec_from_file_location("gpu_train_throughput", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_train_throughput"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # about 15 s of CPU: four Python processes
def test_the_dry_run_runs_every_part_on_the_cpu(tmp_path: Path) -> None:
    """Every part on the CPU: the environment check, the GPU tests (skipped here) and the
    whole `olmo train` row at a tiny shape (the cheapest row: the others are the same code)."""
    results = ROOT / "benchmarks" / "results" / "gpu_train_throughput.json"
    before = results.stat().st_mtime_ns if results.exists() else None
    done = gpu_check(
        tmp_path, GPU_CHECK_BENCH_ARGS="--no-compile --no-search --rows olmo-train-eager"
    )
    assert done.returncode == 0, done.stdout[-3000:]
    summary = (tmp_path / "summary.txt").read_text()
    for part in ("environment", "tests", "throughput"):
        assert f"  {part:<12} ok (" in summary, summary
    assert "skipped" in summary  # the GPU tests' counts
    report = json.loads((tmp_path / "gpu_train_throughput_report.json").read_text())
    [row] = report["rows"]
    assert row["name"] == "olmo train eager" and row["returncode"] == 0
    assert row["tokens_per_s"] > 0 and len(row["losses"]) == 3  # warm-up 1 + 2 timed steps
    assert f"  {'olmo train eager':<24}{row['tokens_per_s']:>12,.0f}" in summary
    assert (tmp_path / "gpu_check.log").read_text().startswith("gpu_check: ")
    # A CPU run is a check of the script: it writes no results file.
    assert (results.stat().st_mtime_ns if results.exists() else None) == before


@pytest.mark.slow  # about 6 s of CPU
def test_a_failing_or_overrunning_part_is_reported_and_the_rest_run(tmp_path: Path) -> None:
    failed = gpu_check(tmp_path / "a", GPU_CHECK_PARTS="environment throughput",
                       GPU_CHECK_BENCH_ARGS="--rows no-such-row")  # fmt: skip
    assert failed.returncode == 1
    summary = (tmp_path / "a" / "summary.txt").read_text()
    assert "  environment  ok (" in summary and "  throughput   FAILED (exit 2, " in summary
    assert "throughput: no report" in summary and "  tests" not in summary  # not asked for
    slow = gpu_check(tmp_path / "b", GPU_CHECK_PARTS="throughput", GPU_CHECK_BENCH_SECONDS="1")
    assert slow.returncode == 1
    assert "  throughput   TIMED OUT after 1 s" in (tmp_path / "b" / "summary.txt").read_text()


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        # One record a step: the steps after the warm-up, 100 and 300 tokens/s -> 150.
        ([{"step": 1, "tokens_per_s": 5.0, "mfu": 0.01}, {"step": 2, "tokens_per_s": 100.0,
          "mfu": 0.2}, {"step": 3, "tokens_per_s": 300.0, "mfu": 0.6}], (150.0, 0.3)),
        # One record an interval of 2 steps (steps 2-3 and 4-5), warm-up 1.
        ([{"step": 1, "tokens_per_s": 5.0, "mfu": None}, {"step": 3, "tokens_per_s": 200.0,
          "mfu": None}, {"step": 5, "tokens_per_s": 200.0, "mfu": None}], (200.0, None)),
        ([{"step": 1, "tokens_per_s": 5.0, "mfu": 0.1}], (None, None)),
    ],
)  # fmt: skip
def test_steady_rates_are_over_the_steps_after_the_warm_up(
    records: list[dict[str, float]], expected: tuple[float | None, float | None]
) -> None:
    rate, mfu = bench().steady_rates(records, warmup=1)
    assert rate == (pytest.approx(expected[0]) if expected[0] else None)
    assert mfu == (pytest.approx(expected[1]) if expected[1] else None)


def test_the_table_gives_the_ratio_against_transformers_compiled_and_the_goals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = [
        {"name": "olmo train compiled", "tokens_per_s": 46000.0, "mfu": 0.52, "memory_gib": 30.0},
        {"name": "transformers compiled", "tokens_per_s": 40000.0, "mfu": 0.45, "memory_gib": 40},
        {"name": "olmo train eager", "tokens_per_s": None, "mfu": None, "returncode": 124,
         "error": "timed out"},
    ]  # fmt: skip
    summary = bench().print_table(rows, None)
    out = capsys.readouterr().out
    assert summary == {"olmo train compiled / transformers compiled": 1.15,
                       "mfu_olmo_train_compiled": 0.52}  # fmt: skip
    assert "ratio olmo train compiled / transformers compiled: 1.15 (goal >= 1.15: met)" in out
    assert "MFU olmo train compiled: 52.0% (goal >= 50%: met)" in out
    assert f"{'olmo train eager':<26}{'-':>12}{'-':>8}{'-':>10}  FAILED (exit 124)" in out
    assert "ratio olmo train eager / transformers eager: - (a row failed or did not run)" in out


def test_the_largest_model_line_says_whether_a_larger_count_failed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fitted = {"n_layers": 20, "params": 4.5e9, "fits": True, "memory_gib": 70.0}
    search = {"width": "olmo-7b", "largest": fitted, "smallest_not_fitting_layers": 21,
              "tries": [fitted]}  # fmt: skip
    bench().print_table([], search)
    assert "20 layers at olmo-7b's width, 4.50B params, peak 70.0 GiB (21 layers did not " in (
        capsys.readouterr().out
    )
    bench().print_table([], {**search, "smallest_not_fitting_layers": None})  # out of time
    out = capsys.readouterr().out
    assert "peak 70.0 GiB (no larger count was tried)" in out and "None" not in out


def test_the_gpu_results_rows_go_into_the_readme_table(tmp_path: Path) -> None:
    """A results file from a GPU run renders in benchmarks/table.py's table: the goal's row
    with its ratio and verdict, and a failed row as failed."""
    module = bench()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import table

    args = argparse.Namespace(steps=10, micro_batch=4, seq=2048, warmup=5)
    rows = [
        {"name": "olmo train compiled", "command": "olmo train c.yaml", "tokens_per_s": 46000.0,
         "mfu": 0.52, "memory_gib": 30.0},
        {"name": "transformers compiled", "tokens_per_s": 40000.0, "mfu": 0.45, "memory_gib": 40},
        {"name": "olmo train eager", "command": "olmo train e.yaml", "tokens_per_s": 30000.0,
         "mfu": 0.34},
        {"name": "transformers eager", "tokens_per_s": None, "returncode": 124,
         "error": "timed out after 90 s"},
    ]  # fmt: skip
    [goal, eager] = module.result_rows(rows, args)
    assert goal["ratio"] == 1.15 and goal["met"] is True and goal["goal"] == 1.15
    assert goal["ours_mfu"] == 0.52 and goal["mfu_met"] is True
    assert goal["ours"]["seconds"] == pytest.approx(10 * 4 * 2048 / 46000, abs=1e-4)
    assert eager["ratio"] is None and eager["theirs"]["failed"]
    payload = {"benchmark": "gpu_train_throughput", "command": "python x.py",
               "date": "2026-12-05 17:00 UTC", "machine": {"cpus": 16, "cpu": "x"},
               "rows": [goal, eager]}  # fmt: skip
    (tmp_path / "gpu_train_throughput.json").write_text(json.dumps(payload))
    block = table.table(table.load_results(tmp_path))
    assert "| 1.15× | ≥ 1.15× met |" in block, block
    assert "peer failed" in block
