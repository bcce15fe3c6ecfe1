"""The sides of the evaluation benchmark (``benchmarks/eval_throughput.py``): our
``olmo eval downstream`` and ``lm_eval --model hf`` as whole commands, and the core calls,
ours in this process against the peers' scripts (``benchmarks/peers/``) on the same work, with
the agreement of their outputs."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness import ROOT, Side, compare

from olmo_nn.eval.generation import GenerationRequest, batches_by_length, generate
from olmo_nn.eval.models import LanguageModel
from olmo_nn.eval.scoring import Request, score_requests

BATCH_SIZE = 32
OLMO = str(Path(sys.executable).with_name("olmo"))
PEERS = ROOT / "benchmarks" / "peers"
CORE_SECONDS = r"core seconds: ([0-9.]+)"
GENERATION_BATCH = 16
GENERATION_NEW_TOKENS = 32

WHOLE_WARMUP = False
"""No untimed run of the whole commands: the core calls, run first, have warmed the page cache
for both sides' libraries and the model files."""


def _fresh(folder: Path) -> Any:
    def clear() -> None:
        shutil.rmtree(folder, ignore_errors=True)

    return clear


def olmo_side(name: str, output: Path, args: list[str], env: dict[str, str]) -> Side:
    """``olmo eval downstream ARGS --output OUTPUT --dump-requests`` (output cleared first)."""
    argv = [OLMO, "eval", "downstream", *args, "--output", str(output), "--dump-requests"]
    return Side(name, argv=argv, env=env, before=_fresh(output), warmup=WHOLE_WARMUP)


def lm_eval_side(
    hf: Path, tasks: list[str], include: Path, output: Path, args: list[str], **run: Any
) -> Side:
    """``lm_eval --model hf`` on the local ``tasks`` of ``include``, samples logged."""
    argv = [str(run["peer_venv"] / "bin" / "lm_eval"), "--model", "hf",
            "--model_args", f"pretrained={hf},dtype=float32", "--tasks", ",".join(tasks),
            "--include_path", str(include), "--device", "cpu", *args,
            "--output_path", str(output), "--log_samples"]  # fmt: skip
    return Side(
        "lm_eval --model hf", argv=argv, env=run["env"], before=_fresh(output), warmup=WHOLE_WARMUP
    )


def all_ok(*sides: Side) -> bool:
    """Every timed run of every side succeeded (so their outputs can be compared)."""
    return all(side.runs and all(r.ok for r in side.runs) for side in sides)


def compare_whole(
    sides: Sequence[Side],
    label: str,
    check: Callable[[], dict[str, Any]],
    agreed: Callable[[dict[str, Any]], bool],
    repeats: int,
) -> tuple[dict[str, Any] | None, list[str]]:
    """Time the whole commands ``sides`` (ours and the peer's first, any others after) and,
    when ours and the peer's all succeeded, ``check`` their outputs; the check (None if a run
    of either failed) and the failures, each starting with ``label``: a failed run of any
    side, a check that ``agreed`` refuses."""
    compare(sides, repeats=repeats)
    if not all_ok(*sides[:2]):
        return None, [f"{label}: a run failed, so the sides were not compared"]
    failures = [f"{label}: a run of {side.name!r} failed" for side in sides[2:] if not all_ok(side)]
    result = check()
    if not agreed(result):
        failures.append(f"{label}: {result}")
    return result, failures


def write_requests(requests: list[Request], path: Path) -> Path:
    """One JSON object a line (``context``, ``continuation``): the peer's core-call input."""
    with path.open("w", encoding="utf-8") as lines:
        for request in requests:
            record = {"context": request.context, "continuation": request.continuation}
            lines.write(json.dumps(record) + "\n")
    return path


def _peer_script(name: str, script: str, args: Sequence[Any], run: dict[str, Any]) -> Side:
    """``benchmarks/peers/SCRIPT ARGS`` in the peer's environment, timed by the seconds of the
    call that the script reports."""
    python = run["peer_venv"] / "bin" / "python"
    return Side(
        name,
        argv=[str(python), str(PEERS / script), *map(str, args)],
        env=run["env"],
        reported_seconds=CORE_SECONDS,
        warmup=False,  # a fresh process each run: the script warms itself up, untimed
    )


def _compare_core(ours: Side, peer: Side, peer_out: Path, repeats: int) -> Any:
    """Time both sides; the peer's JSON output, or None when either side's last run failed."""
    compare([ours, peer], repeats=repeats)
    if not (ours.runs and peer.runs and ours.runs[-1].ok and peer.runs[-1].ok):
        return None
    return json.loads(peer_out.read_text())


def compare_core_calls(
    scorer: Any, hf: Path, requests: list[Request], folder: Path, name: str, **run: Any
) -> tuple[Side, Side, dict[str, Any] | None]:
    """Our ``score_requests`` against ``HFLM.loglikelihood`` on ``requests``; the sides and
    the agreement (None when a run failed)."""
    peer_out = folder / f"{name}_lm_eval_logprobs.json"
    ours = Side(
        "score_requests",
        call=lambda: [
            s.logprob_sum
            for s in score_requests(scorer, requests, convention="joint", batch_size=BATCH_SIZE)
        ],
    )
    requests_file = write_requests(requests, folder / f"{name}_requests.jsonl")
    peer = _peer_script("HFLM.loglikelihood", "lm_eval_loglikelihood.py",
                        [hf, requests_file, peer_out, "--batch-size", BATCH_SIZE], run)  # fmt: skip
    theirs = _compare_core(ours, peer, peer_out, run["repeats"])
    if theirs is None:
        return ours, peer, None
    diffs = [abs(a - b) for a, b in zip(ours.runs[-1].value, theirs, strict=True)]
    return ours, peer, {"requests": len(diffs), "max_abs_logprob_diff": max(diffs)}


def compare_generation(
    model: LanguageModel, hf: Path, prompts: list[str], folder: Path, **run: Any
) -> tuple[Side, Side, dict[str, Any] | None]:
    """Our ``generate`` (KV cache) against transformers' ``generate`` on the same batches of
    the same prompts, greedy, :data:`GENERATION_NEW_TOKENS` new tokens each and no stop
    strings (the same work on both sides); the sides and the agreement (None if a run
    failed)."""
    requests = [GenerationRequest(p, max_new_tokens=GENERATION_NEW_TOKENS) for p in prompts]
    ids = [model.tokenizer.encode(prompt) for prompt in prompts]
    batches = batches_by_length([len(prompt) for prompt in ids], GENERATION_BATCH)
    batches_file = folder / "generation_batches.json"
    batches_file.write_text(json.dumps([[ids[i] for i in batch] for batch in batches]))
    peer_out = folder / "generation_tokens.json"
    ours = Side(
        "generate (KV cache)",
        call=lambda: [g.token_ids for g in generate(model, requests, batch_size=GENERATION_BATCH)],
    )
    args = [hf, batches_file, peer_out, "--max-new-tokens", GENERATION_NEW_TOKENS,
            "--vocab", model.tokenizer.vocab_size]  # fmt: skip
    peer = _peer_script("transformers generate", "transformers_generate.py", args, run)
    theirs = _compare_core(ours, peer, peer_out, run["repeats"])  # in the batches' order
    if theirs is None:
        return ours, peer, None
    mine = [ours.runs[-1].value[i] for batch in batches for i in batch]
    return (
        ours,
        peer,
        {
            "prompts": len(prompts),
            "identical_generations": sum(a == b for a, b in zip(mine, theirs, strict=True)),
            "new_tokens_ours": sum(len(t) for t in mine),
            "new_tokens_theirs": sum(len(t) for t in theirs),
        },
    )
