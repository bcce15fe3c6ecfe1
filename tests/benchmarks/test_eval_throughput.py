"""The evaluation benchmark runs end to end on a CPU (``--small``): the whole commands (ARC-Easy,
MMLU 5-shot, generation) and the core calls (ARC-Easy's and MMLU 5-shot's log-likelihoods,
generation), the agreement checks and the results file. lm-eval comes from this environment
(the ``dev`` extra) instead of ``.venv-bench``."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def test_small_benchmark_writes_agreeing_rows(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its harness
    try:
        spec = importlib.util.spec_from_file_location(
            "eval_throughput", BENCHMARKS / "eval_throughput.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
        result = module.main(["--small", "--results-dir", str(tmp_path), "--peer-venv", sys.prefix])
    finally:
        sys.path.remove(str(BENCHMARKS))
        sys.modules.pop("eval_throughput", None)
    assert result["failures"] == []
    written = json.loads((tmp_path / "eval_throughput.json").read_text())
    rows = written["rows"]
    assert [(r["measure"], r["peer"]) for r in rows] == [
        ("whole command", "lm_eval --model hf"),
        ("whole command", "lm_eval --model hf"),
        ("core call", "HFLM.loglikelihood"),
        ("whole command", "lm_eval --model hf"),
        ("core call", "HFLM.loglikelihood"),
        ("whole command", "lm_eval --model hf"),
        ("core call", "transformers generate"),
    ]
    generation = rows[-1]
    assert generation["agreement"] == {
        "prompts": 4, "identical_generations": 4, "new_tokens_ours": 128,
        "new_tokens_theirs": 128,
    }  # fmt: skip
    assert generation["unit"] == "new tokens" and generation["ours"]["rate"] > 0
    whole_generation = rows[-2]
    check = whole_generation["agreement"]
    assert check["prompts"] == 4 and check["same_prompts"]
    assert check["identical_generations"] == 4 and check["differing"] == {}
    assert check["ours_new_tokens"] > 0, check  # the model wrote something to compare
    assert sum(check["ours_stop_reasons"].values()) == 4
    assert whole_generation["unit"] == "prompts" and whole_generation["ours"]["rate"] > 0
    mmlu = rows[4]
    assert mmlu["work"].startswith("MMLU 5-shot 32 requests (8 questions of 4 subjects")
    assert mmlu["agreement"]["requests"] == 32
    assert mmlu["agreement"]["max_abs_logprob_diff"] <= 1e-4
    mmlu_whole = rows[3]["agreement"]
    assert mmlu_whole["requests"] == 32 and mmlu_whole["same_requests"]
    assert mmlu_whole["max_abs_logprob_diff"] <= 1e-4
    assert mmlu_whole["same_acc_per_subject"]
    assert len(mmlu_whole["acc_ours_lm_eval"]) == 4
    assert all(ours == theirs for ours, theirs in mmlu_whole["acc_ours_lm_eval"].values())
    for r in rows:
        assert r["ratio"] is not None and r["ratio"] > 0, r  # no side failed
        assert 0 < r["output_layer_flop_share"] < 1
    agreement = rows[0]["agreement"]
    assert agreement["same_requests"] and agreement["requests"] == rows[0]["requests"] > 0
    assert agreement["max_abs_logprob_diff"] <= 1e-4
    assert agreement["ours_acc_none"] == agreement["lm_eval_acc"]
    assert rows[2]["agreement"]["max_abs_logprob_diff"] <= 1e-4
    assert rows[0]["ours"]["peak_rss_mb"] > 0 and rows[0]["theirs"]["peak_rss_mb"] > 0


def test_whole_command_check_fails_on_a_failed_run_or_a_disagreement() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import eval_sides
        from harness import Side
    finally:
        sys.path.remove(str(BENCHMARKS))

    def sides(peer_fails: bool = False) -> list[Side]:
        peer = (lambda: 1 / 0) if peer_fails else (lambda: 1)
        return [Side("ours", call=lambda: 1), Side("peer", call=peer)]

    checked: list[str] = []

    def check() -> dict[str, int]:
        checked.append("run")
        return {"requests": 3}

    agreement = eval_sides.compare_whole(sides(), "tiny", check, lambda c: True, 1)
    assert agreement == ({"requests": 3}, [])
    assert eval_sides.compare_whole(sides(), "tiny", check, lambda c: False, 1) == (
        {"requests": 3},
        ["tiny: {'requests': 3}"],
    )
    checked.clear()
    assert eval_sides.compare_whole(sides(peer_fails=True), "tiny", check, lambda c: True, 1) == (
        None,
        ["tiny: a run failed, so the sides were not compared"],
    )
    assert checked == []  # no output to compare
    reference = Side("reference", call=lambda: 1 / 0)  # a third side, beside the compared two
    assert eval_sides.compare_whole([*sides(), reference], "tiny", check, lambda c: True, 1) == (
        {"requests": 3},
        ["tiny: a run of 'reference' failed"],
    )
