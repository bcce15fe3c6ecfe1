"""The evaluation benchmark's agreement checks (``benchmarks/lm_eval_local_tasks.py``) fail on
outputs that differ, and its MMLU task holds the rows our ``--limit`` keeps. The outputs are
written here in the layout of ``olmo eval downstream --dump-requests`` and of ``lm_eval
--output_path --log_samples``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def local_tasks() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import lm_eval_local_tasks

        yield lm_eval_local_tasks
    finally:
        sys.path.remove(str(BENCHMARKS))
        sys.modules.pop("lm_eval_local_tasks", None)


def _write(folder: Path, name: str, lines: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps(line) + "\n" for line in lines))


def _ours(folder: Path, values: dict[tuple[str, str], float], dumped: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"task": t, "metric": m, "value": v} for (t, m), v in values.items()]
    (folder / "results.json").write_text(json.dumps(rows))
    _write(folder, "requests.jsonl", dumped)
    return folder


def _theirs(folder: Path, metrics: dict[str, dict[str, float]], samples: dict[str, list]) -> Path:
    _write(folder / "model", "results_2026.json", [{"results": metrics}])
    for task, lines in samples.items():
        _write(folder / "model", f"samples_{task}_2026.jsonl", lines)
    return folder


def _mmlu(tmp_path: Path, *, logprob: float = -1.0, acc: float = 0.5, letter: str = " B") -> Any:
    contexts = ["Q1\nAnswer:", "Q2\nAnswer:"]
    dumped = [
        {"task": "mmlu_anatomy:mc", "doc_id": str(doc), "choice": j, "context": context,
         "continuation": c, "logprob": -1.0 - j}
        for doc, context in zip((7, 30), contexts, strict=True)
        for j, c in enumerate([" A", " B"])
    ]  # fmt: skip
    samples = [
        {"doc_id": k, "arguments": [[context, " A"], [context, letter]],
         "filtered_resps": [[logprob, False], [-2.0, False]]}
        for k, context in enumerate(contexts)
    ]  # fmt: skip
    ours = _ours(tmp_path / "ours", {("mmlu_anatomy:mc", "acc_none"): 0.5}, dumped)
    task = "mmlu_anatomy_lettered_local"
    theirs = _theirs(tmp_path / "theirs", {task: {"acc,none": acc}}, {task: samples})
    return ours, theirs


def test_mmlu_check_agrees_on_the_same_work(local_tasks: ModuleType, tmp_path: Path) -> None:
    check = local_tasks.check_mmlu(*_mmlu(tmp_path), ["anatomy"])
    assert check["requests"] == 4 and check["same_requests"]
    assert check["max_abs_logprob_diff"] == 0.0
    assert check["acc_ours_lm_eval"] == {"anatomy": [0.5, 0.5]}
    assert local_tasks.agrees(check, TOLERANCE)


@pytest.mark.parametrize(
    ("difference", "field"),
    [
        ({"logprob": -1.001}, "max_abs_logprob_diff"),
        ({"acc": 1.0}, "same_acc_per_subject"),
        ({"letter": " C"}, "same_requests"),
    ],
)
def test_mmlu_check_fails_on_different_work(
    local_tasks: ModuleType, tmp_path: Path, difference: dict[str, Any], field: str
) -> None:
    check = local_tasks.check_mmlu(*_mmlu(tmp_path, **difference), ["anatomy"])
    assert not local_tasks.agrees(check, TOLERANCE), check
    assert check[field] is False or check[field] > TOLERANCE


def test_arc_check_without_accuracies_does_not_agree(local_tasks: ModuleType) -> None:
    check = {"same_requests": True, "max_abs_logprob_diff": 0.0}  # neither side's acc found
    assert not local_tasks.agrees(check, TOLERANCE)
    assert local_tasks.agrees({**check, "ours_acc_none": 0.5, "lm_eval_acc": 0.5}, TOLERANCE)


def test_generation_check_counts_generations_that_differ(
    local_tasks: ModuleType, tmp_path: Path
) -> None:
    texts = {"a": " Paris", "b": " 42"}
    dumped = [
        {"task": "nq_open", "doc_id": k, "prompt": f"Question: {k}\nAnswer:", "generation": text,
         "stop_reason": "stop", "num_new_tokens": 3}
        for k, text in texts.items()
    ]  # fmt: skip
    samples = [
        {"doc_id": i, "doc": {"doc_id": k}, "arguments": [[f"Question: {k}\nAnswer:", {}]],
         "filtered_resps": [text if k == "a" else " 41"]}
        for i, (k, text) in enumerate(texts.items())
    ]  # fmt: skip
    ours = _ours(tmp_path / "ours", {("nq_open", "exact_match"): 0.0}, dumped)
    theirs = _theirs(
        tmp_path / "theirs",
        {"nq_open_local": {"exact_match,none": 0.0}},
        {"nq_open_local": samples},
    )
    check = local_tasks.check_generation(ours, theirs, "nq_open")
    assert check["prompts"] == 2 and check["same_prompts"]
    assert check["identical_generations"] == 1
    assert check["differing"] == {"b": {"ours": " 42", "lm_eval": " 41"}}
    assert check["ours_stop_reasons"] == {"stop": 2} and check["ours_new_tokens"] == 6


def test_mmlu_task_holds_the_rows_our_limit_keeps(local_tasks: ModuleType, tmp_path: Path) -> None:
    from olmo_nn.eval.tasks import load_task

    kept = load_task("mmlu_anatomy:mc", limit=3, num_shots=5)
    assert [i.index for i in kept] != [0, 1, 2]  # a sample, not lm-eval's first rows
    (name,) = local_tasks.write_mmlu_tasks({"anatomy": kept}, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "anatomy_test.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row, instance in zip(rows, kept, strict=True):
        options = "".join(
            f"\n {letter}. {c}" for letter, c in zip("ABCD", row["choices"], strict=True)
        )
        assert instance.contexts[0].endswith(
            f"Question: {row['question'].strip()}{options}\nAnswer:"
        )
        assert instance.label == row["answer"]
    yaml = (tmp_path / f"{name}.yaml").read_text()
    assert "fewshot_split: dev" in yaml and "sampler: first_n" in yaml
