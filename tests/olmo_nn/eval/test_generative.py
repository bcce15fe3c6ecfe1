"""Generative tasks: SQuAD-style scoring on hand-made cases, the first prompt of each task
pinned, shot limits, and ``olmo eval downstream`` end to end with the dump."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from olmo_nn.cli.main import main
from olmo_nn.eval.generative import (
    GENERATIVE_TASKS,
    GenerativeInstance,
    exact_match_score,
    f1_score,
    generative_spec,
    load_generative_task,
    normalize_answer,
    score_generation,
)
from olmo_nn.eval.tasks import load_task


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Beatles!", "beatles"),
        ("  An apple,  a day. ", "apple day"),
        ("Theater of the absurd", "theater of absurd"),  # "the" only as a word
        ("U.S.A.", "usa"),
        ("60°", "60°"),  # not ASCII punctuation
        ("", ""),
    ],
)
def test_normalize_answer(text: str, normalized: str) -> None:
    assert normalize_answer(text) == normalized


def test_exact_match_and_f1_take_the_best_gold_answer() -> None:
    assert exact_match_score(" the Eiffel Tower.", ["Paris", "Eiffel tower"]) == 1.0
    assert exact_match_score(" Eiffel", ["Eiffel tower"]) == 0.0
    # prediction {sinclair, lewis, was}, gold {harry, sinclair, lewis}: P = R = 2/3
    assert f1_score("Sinclair Lewis was", ["Harry Sinclair Lewis"]) == pytest.approx(2 / 3)
    # the better of 0 (London) and 2/3 (P = 1, R = 1/2)
    assert f1_score(" Paris", ["London", "Paris, France"]) == pytest.approx(2 / 3)
    assert f1_score("the the", ["a"]) == 0.0  # both normalize to nothing
    assert f1_score(" 14 December 1972", ["December 1972"]) == pytest.approx(0.8)
    assert f1_score("anything", []) == 0.0


def test_arithmetic_is_exact_without_normalization() -> None:
    spec = GENERATIVE_TASKS["basic_arithmetic"]
    assert score_generation(spec, " -16", ["-16"]) == {"exact_match": 1.0}
    assert score_generation(spec, " 16", ["-16"]) == {"exact_match": 0.0}
    assert score_generation(spec, " 16.", ["16"]) == {"exact_match": 0.0}
    squad = GENERATIVE_TASKS["nq_open"]
    assert score_generation(squad, " 16", ["-16"]) == {"exact_match": 1.0, "f1": 1.0}


NQ_FIRST = "Question: when was the last time anyone was on the moon\nAnswer:"
NQ_SHOTS = (
    "Question: which side of the white house is the front\nAnswer: North\n\n"
    "Question: who's hosting the super bowl in 2019\nAnswer: Atlanta, Georgia\n\n"
    "Question: what is the origin of the name cynthia\nAnswer: Greek\n\n"
    'Question: who is the guy who voiced disney channel\nAnswer: "Buzz" Brainard, Cameron\n\n'
    "Question: what is the size of the angles of an equilateral triangle\nAnswer: 60°\n\n"
)


def test_first_prompts(cache_dir: Path) -> None:
    def first(name: str, num_shots: int | None = None) -> GenerativeInstance:
        [instance] = load_generative_task(
            name, limit=None, cache_dir=cache_dir, num_shots=num_shots
        )[:1]
        assert instance.index == 0
        return instance

    nq = first("nq_open", 0)
    assert nq.prompt == NQ_FIRST
    assert nq.answers == ["14 December 1972 UTC", "December 1972"]
    # 5-shot by default: OLMES's curated shots, in its layout (the prompts of the wheel's
    # naturalqs_open requests; all 1000 of them were compared when this was written).
    assert first("nq_open").prompt == NQ_SHOTS + NQ_FIRST
    two_shots = "".join(shot + "\n\n" for shot in NQ_SHOTS.split("\n\n")[:2])
    assert first("nq_open", 2).prompt == two_shots + NQ_FIRST
    trivia = first("triviaqa")
    assert trivia.prompt == (
        "Question: Which Lloyd Webber musical premiered in the US on 10th December 1993?\nAnswer:"
    )
    assert trivia.answers == [
        "Sunset Blvd", "West Sunset Boulevard", "Sunset Boulevard", "Sunset Bulevard",
        "Sunset Blvd.",
    ]  # fmt: skip
    assert trivia.doc_id == "tc_33"
    arithmetic = first("basic_arithmetic")
    assert arithmetic.prompt == "Question: Calculate 5 + 91 =\nAnswer:"
    assert arithmetic.answers == ["96"] and arithmetic.doc_id == "q1630_1d2d_max2d_plus"


def test_shot_limits_and_formats(cache_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"'triviaqa' cannot run 1-shot.*no shots"):
        load_generative_task("triviaqa", limit=2, cache_dir=cache_dir, num_shots=1)
    with pytest.raises(ValueError, match=r"cannot run 6-shot.*5 curated shots"):
        load_generative_task("nq_open", limit=2, cache_dir=cache_dir, num_shots=6)
    with pytest.raises(ValueError, match="no lettered multiple-choice format"):
        generative_spec("nq_open:mc")
    assert generative_spec("nq_open:rc") is GENERATIVE_TASKS["nq_open"]
    assert generative_spec("arc_easy") is None
    # The rank-classification loader says where a generative task runs.
    with pytest.raises(ValueError, match="'triviaqa' is a generative task"):
        load_task("triviaqa", limit=2, cache_dir=cache_dir)
    with pytest.raises(ValueError, match=r"generative tasks .*nq_open, triviaqa"):
        load_task("nq_opn", limit=2, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    assert main(["model", "init", "--preset", "tiny", "n_layers=1", "d_model=64", "n_heads=2",
                 "mlp_hidden_size=128", "--output", str(path)]) == 0  # fmt: skip
    return path


def test_cli_generative_tasks_with_the_dump(
    checkpoint: Path, tmp_path: Path, cache_dir: Path
) -> None:
    out = tmp_path / "gen"
    assert main(["eval", "downstream", "--model", str(checkpoint), "--tasks",
                 "nq_open,basic_arithmetic,copa", "--limit", "3", "--batch-size", "2",
                 "--output", str(out), "--dump-requests"]) == 0  # fmt: skip
    rows = json.loads((out / "results.json").read_text())
    metrics = {(r["task"], r["metric"]) for r in rows}
    assert {("nq_open", m) for m in ("exact_match", "f1", "f1_stderr", "truncated_requests")} <= (
        metrics
    )
    assert ("basic_arithmetic", "exact_match") in metrics
    assert ("basic_arithmetic", "f1") not in metrics
    assert ("copa", "acc") in metrics
    dump = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    generated = [r for r in dump if r["task"] == "nq_open"]
    assert len(generated) == 3
    for record in generated:
        assert record["prompt"].startswith(NQ_SHOTS) and record["prompt"].endswith("\nAnswer:")
        assert {"generation", "answers", "exact_match", "f1", "stop_reason"} <= set(record)
        assert record["num_new_tokens"] <= 50
        assert not any(stop in record["generation"] for stop in ("Question:", "Q:", "\n\n"))
    nq = {r["metric"]: r["value"] for r in rows if r["task"] == "nq_open"}
    assert nq["f1"] == pytest.approx(sum(r["f1"] for r in generated) / 3)
    # A generative task has no lettered format; too many shots fail before the model loads.
    assert main(["eval", "downstream", "--model", str(tmp_path / "missing"), "--tasks",
                 "triviaqa", "--num-shots", "5", "--output", str(tmp_path / "x")]) == 2  # fmt: skip
