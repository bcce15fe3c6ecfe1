"""The training benchmark runs end to end on a CPU (small shape, eager rows)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "train_throughput.py"


def test_benchmark_prints_a_row_per_model(capsys) -> None:  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--small", "--no-compile"])
    assert [row["name"] for row in rows] == ["transformers eager", "ours eager"]
    assert all(row["tokens_per_s"] > 0 for row in rows)
    assert "ours eager" in capsys.readouterr().out
