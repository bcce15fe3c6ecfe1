"""`olmo eval downstream` and `olmo eval perplexity` end to end on a tiny random checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from olmo_nn.cli.main import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    assert main(["model", "init", "--preset", "tiny", "n_layers=1", "d_model=64", "n_heads=2",
                 "mlp_hidden_size=128", "--output", str(path)]) == 0  # fmt: skip
    return path


def test_downstream_writes_rows_and_requests(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    assert main(["eval", "downstream", "--model", str(checkpoint), "--tasks", "arc_easy,copa",
                 "--limit", "6", "--output", str(out), "--dump-requests"]) == 0  # fmt: skip
    rows = json.loads((out / "results.json").read_text())
    metrics = {(r["task"], r["metric"]) for r in rows}
    # By default each task's OLMo default and the free normalizations: ARC's default is
    # unconditional, COPA's is none, so only ARC scores the unconditional requests.
    free = ("acc", "acc_none", "acc_per_token", "acc_per_char")
    assert {("arc_easy", m) for m in (*free, "acc_unconditional")} <= metrics
    assert {("copa", m) for m in free} <= metrics
    assert ("copa", "acc_unconditional") not in metrics
    arc = {r["metric"]: r["value"] for r in rows if r["task"] == "arc_easy"}
    assert arc["acc"] == arc["acc_unconditional"]  # OLMo's default for ARC
    copa = {r["metric"]: r["value"] for r in rows if r["task"] == "copa"}
    assert copa["acc"] == copa["acc_none"]
    assert all(r["count"] == 6 for r in rows)
    truncated = {r["task"]: r["value"] for r in rows if r["metric"] == "truncated_requests"}
    assert truncated == {"arc_easy": 0.0, "copa": 0.0}
    requests = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert len(requests) == sum(1 for r in requests if r["task"] == "arc_easy") + 6 * 2
    assert requests[0]["context"].startswith("Question: ") and requests[0]["context"].endswith(
        "\nAnswer:"
    )
    unconditional = {r["task"]: r["unconditional_logprob"] is not None for r in requests}
    assert unconditional == {"arc_easy": True, "copa": False}


def test_mrpc_f1_is_that_of_the_dumped_predictions(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "mrpc"
    assert main(["eval", "downstream", "--model", str(checkpoint), "--tasks", "mrpc",
                 "--limit", "12", "--output", str(out), "--dump-requests"]) == 0  # fmt: skip
    rows = {r["metric"]: r for r in json.loads((out / "results.json").read_text())}
    requests = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    # Each example's prediction under MRPC's normalization (none: the summed log-likelihood).
    best: dict[str, dict] = {}
    for request in requests:
        doc = request["doc_id"]
        if doc not in best or request["logprob"] > best[doc]["logprob"]:
            best[doc] = request
    assert len(best) == 12 and {r["continuation"] for r in requests} == {" yes", " no"}
    said_yes = [r["continuation"] == " yes" for r in best.values()]
    is_yes = [r["label"] == 0 for r in best.values()]  # choice 0, " yes": a paraphrase
    tp = sum(s and t for s, t in zip(said_yes, is_yes, strict=True))
    fp = sum(s and not t for s, t in zip(said_yes, is_yes, strict=True))
    fn = sum(t and not s for s, t in zip(said_yes, is_yes, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    assert rows["f1"]["value"] == pytest.approx(f1, abs=1e-12)
    assert rows["f1"]["count"] == 12
    correct = [s == t for s, t in zip(said_yes, is_yes, strict=True)]
    assert rows["acc"]["value"] == pytest.approx(sum(correct) / 12)
    assert "f1_stderr" not in rows


def test_downstream_normalizations_option(checkpoint: Path, tmp_path: Path) -> None:
    def metrics(*options: str) -> set[str]:
        out = tmp_path / "-".join(options)
        assert main(["eval", "downstream", "--model", str(checkpoint), "--tasks", "copa",
                     "--limit", "4", "--output", str(out), *options]) == 0  # fmt: skip
        rows = json.loads((out / "results.json").read_text())
        return {r["metric"] for r in rows if not r["metric"].endswith("_stderr")}

    base = {"chance", "truncated_requests"}
    assert metrics("--normalizations", "all") == base | {
        "acc", "acc_none", "acc_per_token", "acc_per_char", "acc_unconditional"
    }  # fmt: skip
    # COPA's default (none) not asked for: no `acc`.
    assert metrics("--normalizations", "per_char,unconditional") == base | {
        "acc_per_char",
        "acc_unconditional",
    }
    assert main(["eval", "downstream", "--model", str(checkpoint), "--tasks", "copa",
                 "--output", str(tmp_path / "bad"), "--normalizations", "per_word"]) == 2  # fmt: skip
    assert not (tmp_path / "bad").exists()


def test_unknown_task_lists_the_available_ones(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", "downstream", "--model", str(checkpoint), "--tasks", "mmlu_astrology",
                 "--output", str(tmp_path / "x")]) == 2  # fmt: skip
    assert "arc_easy" in capsys.readouterr().err


def test_perplexity_per_source(checkpoint: Path, tmp_path: Path) -> None:
    data = tmp_path / "docs" / "web" / "a.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text(
        "".join(
            json.dumps({"id": f"d{i}", "text": f"Document number {i} is short."}) + "\n"
            for i in range(3)
        )
    )
    out = tmp_path / "ppl"
    assert (
        main(
            [
                "eval",
                "perplexity",
                "--model",
                str(checkpoint),
                "--data",
                str(data.parent),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads((out / "results.json").read_text())
    web = {r["metric"]: r for r in rows if r["source"] == "web" and r["domain"] is None}
    assert web["perplexity"]["count"] == 3
    assert web["bits_per_byte"]["value"] > 0


def test_perplexity_fails_when_every_input_is_rejected(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "docs" / "web" / "a.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text('{"id": "a"}\nnot json\n')
    out = tmp_path / "ppl"
    command = ["eval", "perplexity", "--model", str(checkpoint), "--data", str(data.parent)]
    assert main([*command, "--output", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(
        f"olmo eval: error: no document in {data.parent} could be read (2 input record(s) "
        f"rejected; the first: {data}:1: "
    )
    assert error.endswith("nothing was scored and no results were written\n")
    assert not out.exists()


def test_downstream_mmlu_formats_shots_and_averages(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "mmlu"
    tasks = "mmlu_anatomy,mmlu_astronomy,mmlu_philosophy"
    assert main(["eval", "downstream", "--model", str(checkpoint), "--tasks", tasks,
                 "--format", "mc", "--num-shots", "1", "--limit", "3", "--output", str(out),
                 "--dump-requests"]) == 0  # fmt: skip
    rows = json.loads((out / "results.json").read_text())
    acc = {r["task"]: r["value"] for r in rows if r["metric"] == "acc"}
    subjects = [acc[f"mmlu_{s}:mc"] for s in ("anatomy", "astronomy", "philosophy")]
    assert acc["mmlu:mc"] == pytest.approx(sum(subjects) / 3)
    assert acc["mmlu_stem:mc"] == pytest.approx((subjects[0] + subjects[1]) / 2)
    assert acc["mmlu_humanities:mc"] == pytest.approx(subjects[2])
    categories = {(r["task"], r["metric"]): r["value"] for r in rows}
    assert categories["mmlu:mc", "acc_categories"] == pytest.approx(
        (acc["mmlu_stem:mc"] + acc["mmlu_humanities:mc"]) / 2
    )
    assert categories["mmlu:mc", "subjects"] == 3.0
    requests = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    first = requests[0]
    # The dump holds the whole prompt: description, one shot (answered), the question.
    assert first["context"].startswith(
        "The following are multiple choice questions (with answers) about anatomy.\n\nQuestion: "
    )
    assert first["context"].count("\nAnswer:") == 2 and first["continuation"] == " A"


def test_downstream_shots_without_a_shot_split_fail_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", "downstream", "--model", str(tmp_path / "no-such-model"), "--tasks",
                 "olmes", "--num-shots", "5", "--output", str(tmp_path / "x")]) == 2  # fmt: skip
    assert "ships only its validation split" in capsys.readouterr().err
