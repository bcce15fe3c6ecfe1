"""The evaluation benchmark runs end to end on a CPU against lm-evaluation-harness (small mode)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "eval_throughput.py"


def test_benchmark_agrees_with_lm_eval_and_prints_the_ratio(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("lm_eval")
    spec = importlib.util.spec_from_file_location("eval_throughput", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    figures = module.main(["--small"])
    logprobs = figures["logprobs"]
    assert len(logprobs["lm_eval"]) == figures["num_requests"] == module.SMALL_NUM_REQUESTS
    for name in ("ours", "ours_unshared"):
        for ours, theirs in zip(logprobs[name], logprobs["lm_eval"], strict=True):
            assert ours == pytest.approx(theirs, abs=1e-4)
    assert figures["ours_requests_per_s"] > 0 and figures["lm_eval_requests_per_s"] > 0
    assert "ratio (ours/lm-eval):" in capsys.readouterr().out
