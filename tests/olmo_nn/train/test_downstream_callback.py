"""The in-loop downstream hook: the training shards' tokenizer, and the same accuracies under
FSDP (two gloo ranks on CPU) as in one process."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import yaml

from olmo_nn.data.shards import ShardWriter, TokenShards
from olmo_nn.eval.generative import evaluate_generative_task, load_generative_task
from olmo_nn.eval.mmlu import SUBJECT_CATEGORIES
from olmo_nn.eval.models import LanguageModel
from olmo_nn.eval.scoring import Request, score_requests
from olmo_nn.tokenizer import DEFAULT_TOKENIZER, Tokenizer
from olmo_nn.train.callbacks.base import Callback
from olmo_nn.train.callbacks.downstream import DownstreamEval, group_metrics, shard_tokenizer
from olmo_nn.train.config import TrainConfig
from olmo_nn.train.trainer import Trainer

REPO = Path(__file__).parents[3]
SAMPLE = REPO / "data" / "sample"
WORLD_SIZE = 2
# One example's choices (a packed row) and a request of its own.
REQUESTS = [
    Request("The man broke his toe. What was the cause?", " He dropped a hammer on his foot."),
    Request("The man broke his toe. What was the cause?", " He got a hole in his sock."),
    Request("Hello", " world"),
]
RunRanks = Callable[..., None]  # the conftest fixtures' types
FreePort = Callable[[], int]


def _write_shards(folder: Path, tokenizer: Tokenizer) -> TokenShards:
    with ShardWriter.for_tokenizer(folder, tokenizer) as writer:
        writer.write(tokenizer.encode("Hello world"), id="h", source="s")
    return TokenShards(folder)


def test_sample_shards_name_olmos_tokenizer() -> None:
    tokenizer = shard_tokenizer(TokenShards(SAMPLE / "train"), eos_token_id=50279, pad_token_id=1)
    assert tokenizer.name == DEFAULT_TOKENIZER
    assert tokenizer.fingerprint == Tokenizer.from_name_or_path().fingerprint
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (50279, 1)


def test_shards_made_with_a_tokenizer_file_use_that_file(
    tmp_path: Path, olmo_tokenizer: Tokenizer
) -> None:
    # The same vocabulary, saved compactly: a different file, so a different fingerprint.
    spec = json.loads(olmo_tokenizer.json_text)
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    custom = Tokenizer.from_name_or_path(tmp_path / "tok", eos_token_id=50279)
    assert custom.fingerprint != olmo_tokenizer.fingerprint
    shards = _write_shards(tmp_path / "shards", custom)

    loaded = shard_tokenizer(shards, eos_token_id=50279)
    assert (loaded.name, loaded.fingerprint) == (str(tmp_path / "tok"), custom.fingerprint)

    (tmp_path / "tok" / "tokenizer.json").write_text(olmo_tokenizer.json_text, encoding="utf-8")
    with pytest.raises(ValueError, match="were built with tokenizer"):
        shard_tokenizer(shards, eos_token_id=50279)
    (tmp_path / "tok" / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="in-loop downstream evaluation"):
        shard_tokenizer(shards, eos_token_id=50279)


def test_shards_naming_no_tokenizer_get_olmos(tmp_path: Path, olmo_tokenizer: Tokenizer) -> None:
    with ShardWriter(tmp_path, vocab_size=50280, eos_token_id=50279) as writer:
        writer.write([1, 2, 3], id="a", source="s")
    assert shard_tokenizer(TokenShards(tmp_path)).fingerprint == olmo_tokenizer.fingerprint


# ------------------------------------------------------------------ FSDP2 (2 ranks, gloo, CPU)


def _config(**changes: Any) -> TrainConfig:
    config = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    config["model"].update(d_model=32, n_heads=2, mlp_hidden_size=64, max_sequence_length=64)
    config["data"].update(paths=[str(SAMPLE / "train")], sequence_length=64, validation_paths=[])
    config.update(
        global_batch_size=4, micro_batch_size=2, max_steps=4, save_interval=100,
        save_interval_unsharded=None, log_interval=1, mlflow=False, device="cpu",
        eval={"interval": 2, "downstream_tasks": ["copa", "basic_arithmetic"],
              "downstream_limit": 6},
    )  # fmt: skip
    config["scheduler"].update(warmup_steps=2)
    config.update(changes)
    return TrainConfig.from_dict(config)


class _Recorder(Callback):
    def __init__(self) -> None:
        self.metrics: list[dict[str, Any]] = []

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self.metrics.append(dict(metrics))


def _train(run_dir: Path) -> dict[str, Any]:
    """The run's metrics, and the trained model's log-likelihoods of a few requests."""
    recorder = _Recorder()
    trainer = Trainer(_config(), run_dir, callbacks=[DownstreamEval(), recorder])
    trainer.fit()
    model = LanguageModel(
        trainer.model,
        Tokenizer.from_name_or_path(),
        name="trained",
        max_length=trainer.config.model.max_sequence_length,
        vocab_size=trainer.config.model.padded_vocab_size,
    )
    scores = score_requests(model, REQUESTS, batch_size=2)
    # The trained model's exact match on the in-loop examples, outside the loop.
    prompts = load_generative_task("basic_arithmetic", limit=6)
    generated = evaluate_generative_task(model, "basic_arithmetic", prompts)
    return {
        "metrics": recorder.metrics,
        "logprobs": [s.logprob_sum for s in scores],
        "exact_match": generated.scores["exact_match"],
    }


def _fsdp_worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
    )
    try:
        result = _train(Path(out_dir) / "run")
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="needs torch.distributed")
def test_fsdp_ranks_score_like_one_process(
    tmp_path: Path, run_ranks: RunRanks, free_port: FreePort
) -> None:
    run_ranks(_fsdp_worker, WORLD_SIZE, free_port(), str(tmp_path / "fsdp"))
    one = _train(tmp_path / "one")
    ranks = [json.loads((tmp_path / "fsdp" / f"rank{r}.json").read_text()) for r in range(2)]
    for result in ranks:
        assert result["logprobs"] == pytest.approx(one["logprobs"], abs=1e-4)
        assert [m["step"] for m in result["metrics"]] == [1, 2, 3, 4]
        for a, b in zip(result["metrics"], one["metrics"], strict=True):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-5)
            downstream = {k for k in b if k.startswith("eval/downstream/")}
            assert downstream == {k for k in a if k.startswith("eval/downstream/")}
            assert {k: a[k] for k in downstream} == {k: b[k] for k in downstream}
    evaluated = [m["step"] for m in one["metrics"] if "eval/downstream/copa/acc" in m]
    assert evaluated == [2, 4]
    # The generative task: greedy decoding on every rank, its exact match beside copa's acc.
    last = one["metrics"][-1]
    assert {k for k in last if k.startswith("eval/downstream/basic_arithmetic/")} == {
        "eval/downstream/basic_arithmetic/exact_match"
    }
    assert last["eval/downstream/basic_arithmetic/exact_match"] == one["exact_match"]


# ------------------------------------------------------------------ group scores in the loop


def test_a_named_suite_and_mmlus_averages_join_the_metrics(tmp_path: Path) -> None:
    """``olmo1`` (core9 and MMLU lettered) in the loop: MMLU's averages and the suite's score
    are the means, by hand, of the per-task accuracies the callback logged beside them."""
    recorder = _Recorder()
    config = _config(
        max_steps=3,  # past the two warmup steps
        eval={"interval": 3, "downstream_tasks": ["olmo1"], "downstream_limit": 2},
    )
    Trainer(config, tmp_path / "run", callbacks=[DownstreamEval(), recorder]).fit()
    last = recorder.metrics[-1]
    assert last["step"] == 3
    acc = {
        key.removeprefix("eval/downstream/").removesuffix("/acc"): value
        for key, value in last.items()
        if key.startswith("eval/downstream/") and key.endswith("/acc")
    }
    subjects = [f"mmlu_{s}:mc" for s in SUBJECT_CATEGORIES]
    core9 = ["arc_easy", "arc_challenge", "boolq", "copa", "hellaswag", "openbookqa", "piqa",
             "sciq", "winogrande"]  # fmt: skip
    mmlu = sum(acc[s] for s in subjects) / 57
    assert acc["mmlu:mc"] == pytest.approx(mmlu, abs=1e-12)
    stem = [f"mmlu_{s}:mc" for s, c in SUBJECT_CATEGORIES.items() if c == "stem"]
    assert acc["mmlu_stem:mc"] == pytest.approx(sum(acc[s] for s in stem) / 19, abs=1e-12)
    assert acc["olmo1"] == pytest.approx((sum(acc[t] for t in core9) + mmlu) / 10, abs=1e-12)
    assert set(acc) == {*core9, *subjects, "olmo1", "mmlu:mc"} | {
        f"mmlu_{c}:mc" for c in ("stem", "humanities", "social_sciences", "other")
    }
    # Per normalization and over the categories too, as `olmo eval downstream` writes them.
    assert "eval/downstream/mmlu:mc/acc_categories" in last
    assert "eval/downstream/mmlu:mc/acc_none" in last
    assert not any(k.endswith(("/subjects", "/tasks")) for k in last)


def test_group_metrics_name_mmlus_averages_and_each_suite() -> None:
    rows = [
        {"task": task, "metric": "acc", "value": value, "count": 2}
        for task, value in [("copa", 0.5), ("mmlu_anatomy", 1.0), ("mmlu_philosophy", 0.0)]
    ]
    assert group_metrics(rows, ["core9"]) == {  # core9 misses eight tasks: no score
        "eval/downstream/mmlu/acc": 0.5,
        "eval/downstream/mmlu_stem/acc": 1.0,
        "eval/downstream/mmlu_humanities/acc": 0.0,
        "eval/downstream/mmlu/acc_categories": 0.5,
    }


def test_mrpc_logs_its_f1_beside_its_accuracy(tmp_path: Path) -> None:
    """A task OLMo reports by F1 (MRPC) logs ``/f1`` in the loop: the F1 that
    ``evaluate_task`` gives for the trained model's predictions on the same examples."""
    from olmo_nn.eval.downstream import evaluate_task
    from olmo_nn.eval.tasks import get_task_spec, load_task

    recorder = _Recorder()
    config = _config(
        max_steps=3, eval={"interval": 3, "downstream_tasks": ["mrpc"], "downstream_limit": 8}
    )
    trainer = Trainer(config, tmp_path / "run", callbacks=[DownstreamEval(), recorder])
    trainer.fit()
    last = recorder.metrics[-1]
    spec = get_task_spec("mrpc")
    model = LanguageModel(
        trainer.model,
        Tokenizer.from_name_or_path(),
        name="trained",
        max_length=config.model.max_sequence_length,
        vocab_size=config.model.padded_vocab_size,
    )
    with torch.no_grad():
        outside = evaluate_task(
            model,
            "mrpc",
            load_task("mrpc", limit=8),
            default_normalization=spec.default_normalization,
            unconditional_context=spec.unconditional_context,
            f1_positive=spec.f1_positive,
        )
    assert outside.f1 is not None
    assert last["eval/downstream/mrpc/f1"] == outside.f1
    assert last["eval/downstream/mrpc/acc"] == outside.accuracy[spec.default_normalization]
