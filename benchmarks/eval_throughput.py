"""Evaluation: ``olmo eval downstream`` against ``lm_eval --model hf`` (ARC-Easy, MMLU 5-shot,
generation), whole commands and core calls, same run.

    .venv/bin/python benchmarks/eval_throughput.py [--shapes small,olmo-150m] [--small]
        [--results-dir benchmarks/results] [--peer-venv .venv-bench]

The sides (our command, lm-eval's, the core calls) are built in ``benchmarks/eval_sides.py``.
For each model shape a random ``OLMo`` is built once, saved as our checkpoint and exported for
transformers (``export_hf``, float32, OLMo's tokenizer beside it). The examples our command
evaluates are written out as lm-eval local tasks (``benchmarks/lm_eval_local_tasks.py``,
passed with ``--include_path``), so both sides do exactly the same work: our ``arc_easy`` (the
whole validation split: 570 questions, 2,281 requests; a ``--limit`` sample at the 150M
shape) as a JSONL of its contexts and choices; ``mmlu_<subject>:mc`` as one task per subject
in OLMES's lettered layout (the test rows our ``--limit`` keeps, the dev split for the
``first_n`` shots, MMLU's description); ``nq_open``'s 5-shot prompts as a ``generate_until``
task with our stop strings and ``max_gen_toks``.

Whole commands (a child process each, wall time and peak RSS, as a user runs them):

* ``olmo eval downstream --model hf:FOLDER --tasks arc_easy --normalizations none,per_char
  --convention joint``: the same work as lm-eval (its ``acc`` and ``acc_norm`` need only each
  request's own log-likelihood; lm-eval's tokenization), against
  ``lm_eval --model hf --model_args pretrained=FOLDER,dtype=float32 --tasks arc_easy_local
  --include_path DIR --device cpu --batch_size 32 --log_samples``.
* Beside them, for reference: our command with its default normalizations (for ARC that is
  OLMo's ``unconditional`` too, which scores a second set of requests that lm-eval does not).
* MMLU 5-shot: ``olmo eval downstream --tasks mmlu_abstract_algebra:mc,... --num-shots 5
  --normalizations none --convention joint --limit N`` against ``lm_eval --tasks
  mmlu_<subject>_lettered_local,... --num_fewshot 5`` (``--limit`` questions of each of
  :data:`MMLU_SUBJECTS`; the same requests, log-likelihoods within 1e-4, the same accuracy
  per subject).
* Generation (small shape): ``olmo eval downstream --tasks nq_open --limit N --batch-size 16``
  (5-shot, the task's stop strings, up to 50 new tokens, greedy) against ``lm_eval --tasks
  nq_open_local --batch_size 16`` on the same prompts; the generations must be identical
  prompt by prompt. The peer's ``generate`` is given ``suppress_tokens`` for the output rows
  past the tokenizer's ids (no text holds them; our argmax runs over the tokenizer's ids).

Core calls: our ``score_requests`` (the model loaded once in this process) against
``HFLM.loglikelihood`` (``benchmarks/peers/lm_eval_loglikelihood.py`` in the peer's
environment, which reports the seconds of the call alone) on the same requests: ARC-Easy's,
and MMLU 5-shot's (a --limit sample of a few subjects' test questions in the lettered format,
each prompt the subject's description and its five dev shots: long contexts shared by four
one-token continuations, the work of MMLU as OLMo and OLMES report it); and, at the small
shape, generation: our ``generate`` (greedy, KV cache) against transformers' ``generate``
(``benchmarks/peers/transformers_generate.py``) on the same batches of ``nq_open`` 5-shot
prompts, a fixed number of new tokens each (their generations must be identical; new tokens
per second; ``--generation-only`` runs this row alone). They run first: besides their own
figures, they bring both sides' libraries into the page cache, so the whole commands that
follow run without a warm-up of their own (which the budget of ``make bench`` could not
afford) and neither side's first run is colder than the other's.

Agreement is checked and recorded: the requests both sides scored (from our
``--dump-requests`` and lm-eval's ``--log_samples``) must be the same, accuracy (ours
``acc_none``, lm-eval's ``acc``) equal and every log-likelihood within 1e-4, and the
generations identical; a mismatch makes the script exit non-zero after writing its results.
Each row carries its shape's output-layer share of the forward FLOPs (``d * V`` against the
blocks' matmuls, attention scores left out).

``--small`` is a smoke test (a tiny model, a few questions, one run per side, no warm-up):
``tests/benchmarks/test_eval_throughput.py`` runs it with the peer from ``.venv``. Results:
``benchmarks/results/eval_throughput.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Nothing here may reach the Hugging Face hub (the children get OFFLINE too).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch
from eval_sides import (
    BATCH_SIZE,
    GENERATION_BATCH,
    GENERATION_NEW_TOKENS,
    WHOLE_WARMUP,
    compare_core_calls,
    compare_generation,
    compare_whole,
    lm_eval_side,
    olmo_side,
)
from harness import BENCH_VENV, RESULTS, Side, row, versions, write_results
from lm_eval_local_tasks import (
    ARC_TASK,
    agrees,
    check_arc,
    check_generation,
    check_mmlu,
    write_arc_task,
    write_generation_task,
    write_mmlu_tasks,
)

from olmo_nn.checkpoint import save_checkpoint
from olmo_nn.eval.generative import generative_spec, load_generative_task
from olmo_nn.eval.models import LanguageModel, load_language_model
from olmo_nn.eval.scoring import Request
from olmo_nn.eval.tasks import DEFAULT_LIMIT, load_task
from olmo_nn.hf import export_hf
from olmo_nn.model import OLMo, TransformerConfig, preset

OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}
TASK = "arc_easy"
TOLERANCE = 1e-4
MMLU_SUBJECTS = ("abstract_algebra", "anatomy", "college_physics", "marketing")
"""Subjects of the MMLU rows; their 5-shot prompts fit every shape's window."""
GENERATION_TASK = "nq_open"


@dataclass(frozen=True)
class Shape:
    """One model shape and how much of the task it runs."""

    name: str
    config: TransformerConfig
    questions: int | None
    """ARC-Easy questions (``--limit``), None for the whole validation split."""
    repeats: int
    """Timed runs of each whole command."""
    core_repeats: int
    """Timed runs of each core call."""
    mmlu_questions: int = 20
    """MMLU test questions per subject of :data:`MMLU_SUBJECTS` (``--limit``: OLMo's seeded
    sample, the same questions in the core call and the whole command)."""
    mmlu_repeats: int = 1
    """Timed runs of each MMLU whole command."""
    generation_prompts: int | None = None
    """Prompts of the generation rows (:data:`GENERATION_TASK`); None: no such rows."""


SHAPES = {
    "small": Shape(
        "small",
        TransformerConfig(d_model=256, n_heads=4, n_layers=4),
        questions=None,
        repeats=2,
        core_repeats=2,
        mmlu_questions=25,
        mmlu_repeats=2,
        generation_prompts=32,
    ),
    # A sample of the questions and one core run keep `make bench` within its budget.
    "olmo-150m": Shape(
        "olmo-150m", preset("olmo-150m"), questions=60, repeats=2, core_repeats=1, mmlu_questions=5
    ),
}
SMALL = Shape(
    "tiny",
    TransformerConfig(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=128),
    questions=6,
    repeats=1,
    core_repeats=1,
    mmlu_questions=2,
    generation_prompts=4,
)


def output_layer_share(config: TransformerConfig) -> float:
    """The output layer's share of the forward matmul FLOPs per token: ``d * V`` against
    ``n_layers * (4 d^2 + 3 d h)`` (attention scores, norms and RoPE left out)."""
    head = config.d_model * config.padded_vocab_size
    blocks = config.n_layers * (4 * config.d_model**2 + 3 * config.d_model * config.hidden_size)
    return head / (head + blocks)


def build_model(shape: Shape, work: Path, *, seed: int = 0) -> tuple[Path, Path]:
    """A random ``OLMo`` of ``shape`` in ``work/<shape>``: that folder and the model's
    transformers export (its checkpoint is beside it)."""
    folder = work / shape.name
    print(f"{shape.name}: building a random OLMo ({shape.config.num_params():,} parameters)")
    torch.manual_seed(seed)
    model = OLMo(shape.config)
    model.init_weights(seed=seed)
    checkpoint = save_checkpoint(model, folder / "checkpoint")
    del model
    return folder, export_hf(checkpoint, folder / "hf", dtype="float32")


def generation_rows(
    shape: Shape, model: LanguageModel, hf: Path, folder: Path, common: dict[str, Any], **run: Any
) -> tuple[list[dict[str, Any]], list[str]]:
    """The generation core call's row (none when the shape has no generation prompts) and
    its failures: a failed run, or generations that differ (then the work differs too)."""
    if shape.generation_prompts is None:
        return [], []
    prompts = [
        instance.prompt
        for instance in load_generative_task(GENERATION_TASK, limit=shape.generation_prompts)
    ]
    print(
        f"{shape.name}: generation core calls, {len(prompts)} prompts x "
        f"{GENERATION_NEW_TOKENS} new tokens, batches of {GENERATION_BATCH}"
    )
    ours, peer, agreement = compare_generation(model, hf, prompts, folder, **run)
    failures = []
    if agreement is None:
        failures.append(f"{shape.name} generation: a run failed, so the sides were not compared")
    elif agreement["identical_generations"] != len(prompts):
        failures.append(f"{shape.name} generation: {agreement}")
    new_tokens = len(prompts) * GENERATION_NEW_TOKENS
    work = (
        f"{GENERATION_TASK} 5-shot greedy generation, {len(prompts)} prompts x "
        f"{GENERATION_NEW_TOKENS} new tokens, batches of {GENERATION_BATCH}, {shape.name}"
    )
    generation_row = row(
        work=work,
        measure="core call",
        ours=ours,
        peer=peer,
        goal=1.0 if shape.name == "small" else None,
        unit_of_work=new_tokens,
        unit="new tokens",
        extra={**common, "prompts": len(prompts), "agreement": agreement},
    )
    return [generation_row], failures


def shape_fields(shape: Shape) -> dict[str, Any]:
    """What every row of a shape records about its model."""
    c = shape.config
    return {
        "shape": shape.name,
        "model": f"d_model={c.d_model} n_layers={c.n_layers} n_heads={c.n_heads} "
        f"mlp={c.hidden_size} vocab={c.padded_vocab_size}",
        "parameters": c.num_params(),
        "output_layer_flop_share": round(output_layer_share(c), 4),
    }


def generation_inputs(shape: Shape) -> dict[str, Any]:
    return {
        "generation": f"{GENERATION_TASK} 5-shot prompts (OLMES's shots), the first "
        f"{shape.generation_prompts} of a --limit sample; {GENERATION_NEW_TOKENS} new tokens "
        f"each, greedy, no stop strings or EOS on the peer (the generations are compared), "
        f"batches of {GENERATION_BATCH} longest first, left-padded; ours tokenizes the prompts "
        "inside its timed call, the peer gets token ids",
    }


def run_generation_only(
    shape: Shape, work: Path, *, peer_venv: Path, repeats: int | None
) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """The generation row alone (``--generation-only``): rows, inputs and failures."""
    folder, hf = build_model(shape, work)
    model = load_language_model(f"hf:{hf}", dtype=torch.float32)
    repeats = repeats if repeats is not None else shape.core_repeats
    rows, failures = generation_rows(
        shape, model, hf, folder, shape_fields(shape), peer_venv=peer_venv, env=OFFLINE,
        repeats=repeats,
    )  # fmt: skip
    inputs = {**generation_inputs(shape), "dtype": "float32", "device": "cpu",
              "torch_threads": torch.get_num_threads(), "repeats_core_call": repeats}  # fmt: skip
    return rows, inputs, failures


def mmlu_work(shape: Shape, num_requests: int, questions: int) -> str:
    """The work of both MMLU rows, which score the same questions."""
    return (
        f"MMLU 5-shot {num_requests} requests ({questions} questions of "
        f"{len(MMLU_SUBJECTS)} subjects, lettered), {shape.name}"
    )


def mmlu_whole_row(
    shape: Shape, hf: Path, folder: Path, common: dict[str, Any], **run: Any
) -> tuple[dict[str, Any], list[str]]:
    """MMLU 5-shot lettered, ``--limit`` questions of each subject, as a user runs it on both
    sides; the row and its failures (a failed run, or requests, log-likelihoods or a subject's
    accuracy that differ)."""
    kept = {
        subject: load_task(f"mmlu_{subject}:mc", limit=shape.mmlu_questions, num_shots=5)
        for subject in MMLU_SUBJECTS
    }
    tasks = write_mmlu_tasks(kept, folder / "mmlu_tasks")
    num_requests = sum(len(i.pairs) for instances in kept.values() for i in instances)
    ours_args = ["--model", f"hf:{hf}", "--tasks", ",".join(f"mmlu_{s}:mc" for s in kept),
                 "--num-shots", "5", "--normalizations", "none", "--convention", "joint",
                 "--batch-size", str(BATCH_SIZE), "--limit", str(shape.mmlu_questions)]  # fmt: skip
    ours = olmo_side("olmo eval downstream", folder / "mmlu_ours", ours_args, run["env"])
    theirs_args = ["--num_fewshot", "5", "--batch_size", str(BATCH_SIZE)]
    peer = lm_eval_side(hf, tasks, folder / "mmlu_tasks", folder / "mmlu_lm_eval", theirs_args,
                        **run)  # fmt: skip
    print(f"{shape.name}: MMLU 5-shot whole commands, {num_requests} requests")
    check, failures = compare_whole(
        [ours, peer],
        f"{shape.name} MMLU whole commands",
        lambda: check_mmlu(folder / "mmlu_ours", folder / "mmlu_lm_eval", MMLU_SUBJECTS),
        lambda c: agrees(c, TOLERANCE),
        run["mmlu_repeats"],
    )
    questions = sum(len(instances) for instances in kept.values())
    mmlu_row = row(
        work=f"{mmlu_work(shape, num_requests, questions)}: acc",
        measure="whole command",
        ours=ours,
        peer=peer,
        goal=2.0 if shape.name == "small" else None,
        unit_of_work=num_requests,
        unit="requests",
        extra={**common, "questions": questions, "requests": num_requests, "agreement": check},
    )
    return mmlu_row, failures


def generation_whole_row(
    shape: Shape, hf: Path, folder: Path, common: dict[str, Any], vocab: int, **run: Any
) -> tuple[list[dict[str, Any]], list[str]]:
    """``nq_open`` as a user runs it (5-shot, the task's stop strings and new tokens) on both
    sides, the same prompts (our instances' as an lm-eval ``generate_until`` task); the row
    (none when the shape has no generation prompts) and its failures (a failed run, or
    generations that differ)."""
    if shape.generation_prompts is None:
        return [], []
    spec = generative_spec(GENERATION_TASK)
    assert spec is not None
    instances = load_generative_task(GENERATION_TASK, limit=shape.generation_prompts)
    padded = shape.config.padded_vocab_size
    task = write_generation_task(instances, spec, folder / "generation_task",
                                 suppress_tokens=range(vocab, padded))  # fmt: skip
    ours_args = ["--model", f"hf:{hf}", "--tasks", GENERATION_TASK, "--limit",
                 str(shape.generation_prompts), "--batch-size", str(GENERATION_BATCH)]  # fmt: skip
    ours = olmo_side("olmo eval downstream", folder / "generation_ours", ours_args, run["env"])
    peer = lm_eval_side(hf, [task], folder / "generation_task", folder / "generation_lm_eval",
                        ["--batch_size", str(GENERATION_BATCH)], **run)  # fmt: skip
    print(f"{shape.name}: generation whole commands, {len(instances)} prompts")
    check, failures = compare_whole(
        [ours, peer],
        f"{shape.name} generation whole commands",
        lambda: check_generation(
            folder / "generation_ours", folder / "generation_lm_eval", GENERATION_TASK
        ),
        lambda c: c["same_prompts"] and c["identical_generations"] == len(instances),
        run["repeats"],
    )
    generation_row = row(
        work=f"{GENERATION_TASK} 5-shot greedy generation, {len(instances)} prompts, the "
        f"task's stop strings, up to {spec.max_new_tokens} new tokens, {shape.name}",
        measure="whole command",
        ours=ours,
        peer=peer,
        goal=1.0 if shape.name == "small" else None,
        unit_of_work=len(instances),
        unit="prompts",
        extra={**common, "prompts": len(instances), "agreement": check,
               "note": f"the peer's generate suppresses the output rows {vocab}..{padded - 1}, "
               "past the tokenizer's ids, which our argmax never picks"},
    )  # fmt: skip
    return [generation_row], failures


def run_shape(
    shape: Shape, work: Path, *, peer_venv: Path, repeats: int | None
) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """Build the shape's model and tasks, compare the sides; rows, inputs and failures."""
    folder, hf = build_model(shape, work)
    limit = shape.questions if shape.questions is not None else DEFAULT_LIMIT
    instances = load_task(TASK, limit=limit)
    include, requests = write_arc_task(instances, folder / "task")
    core_repeats = repeats if repeats is not None else shape.core_repeats
    mmlu_repeats = repeats if repeats is not None else shape.mmlu_repeats
    repeats = repeats if repeats is not None else shape.repeats
    env = {**OFFLINE, "HF_DATASETS_CACHE": str(work / "hf_datasets_cache")}
    run = {"peer_venv": peer_venv, "env": env, "repeats": core_repeats}
    ours_args = ["--tasks", TASK, "--limit", str(limit), "--convention", "joint",
                 "--batch-size", str(BATCH_SIZE), "--model", f"hf:{hf}"]  # fmt: skip
    out = {name: folder / name for name in ("ours", "ours_default", "lm_eval")}
    ours = olmo_side("olmo eval downstream", out["ours"],
                     [*ours_args, "--normalizations", "none,per_char"], env)  # fmt: skip
    ours_default = olmo_side("olmo eval (default norms)", out["ours_default"], ours_args, env)
    lm_eval = lm_eval_side(hf, [ARC_TASK], include, out["lm_eval"],
                           ["--batch_size", str(BATCH_SIZE)], **run)  # fmt: skip
    failures: list[str] = []
    checks: dict[str, Any] = {}
    # Core calls: the model loaded once here; the peer's script reports its call's seconds.
    scorer = load_language_model(f"hf:{hf}", dtype=torch.float32)
    print(f"{shape.name}: core calls, {len(requests)} requests, {core_repeats} run(s) each")
    core_ours, core_peer, checks["core"] = compare_core_calls(
        scorer, hf, requests, folder, TASK, **run
    )
    mmlu = [
        instance
        for subject in MMLU_SUBJECTS
        for instance in load_task(f"mmlu_{subject}:mc", limit=shape.mmlu_questions, num_shots=5)
    ]
    mmlu_requests = [Request(c, x) for instance in mmlu for c, x in instance.pairs]
    print(f"{shape.name}: MMLU 5-shot core calls, {len(mmlu_requests)} requests")
    mmlu_ours, mmlu_peer, checks["mmlu_core"] = compare_core_calls(
        scorer, hf, mmlu_requests, folder, "mmlu", **run
    )
    common = {**shape_fields(shape), "questions": len(instances), "requests": len(requests)}
    generation, generation_failures = generation_rows(shape, scorer, hf, folder, common, **run)
    failures += generation_failures
    for key in ("core", "mmlu_core"):
        if checks[key] is None:
            failures.append(f"{shape.name} {key}: a run failed, so the sides were not compared")
        elif checks[key]["max_abs_logprob_diff"] > TOLERANCE:
            failures.append(f"{shape.name} {key}: {checks[key]}")

    print(f"{shape.name}: whole commands, {len(requests)} requests, {repeats} run(s) each")
    checks["ours"], whole_failures = compare_whole(
        [ours, lm_eval, ours_default],
        f"{shape.name} whole commands",
        lambda: check_arc(out["ours"], out["lm_eval"], TASK),
        lambda c: agrees(c, TOLERANCE),
        repeats,
    )
    failures += whole_failures
    mmlu_whole, mmlu_failures = mmlu_whole_row(
        shape, hf, folder, shape_fields(shape), **{**run, "mmlu_repeats": mmlu_repeats}
    )
    generation_whole, generation_whole_failures = generation_whole_row(
        shape, hf, folder, shape_fields(shape), scorer.tokenizer.vocab_size,
        **{**run, "repeats": repeats},
    )  # fmt: skip
    failures += mmlu_failures + generation_whole_failures

    def rss_ok(mine: Side) -> bool | None:
        a, b = mine.record().get("peak_rss_mb"), lm_eval.record().get("peak_rss_mb")
        return None if a is None or b is None else a <= b

    task = f"ARC-Easy {len(requests)} requests, {shape.name}"
    rows = [
        row(
            work=f"{task}: acc + acc_norm",
            measure="whole command",
            ours=ours,
            peer=lm_eval,
            goal=2.0 if shape.name == "small" else 1.5 if shape.name == "olmo-150m" else None,
            unit_of_work=len(requests),
            unit="requests",
            extra={**common, "rss_not_above_peer": rss_ok(ours), "agreement": checks.get("ours")},
        ),
        row(
            work=f"{task}: OLMo's default normalizations (adds the unconditional requests)",
            measure="whole command",
            ours=ours_default,
            peer=lm_eval,
            unit_of_work=len(requests),
            unit="requests",
            extra={**common, "rss_not_above_peer": rss_ok(ours_default)},
        ),
        row(
            work=f"{task}: log-likelihoods",
            measure="core call",
            ours=core_ours,
            peer=core_peer,
            unit_of_work=len(requests),
            unit="requests",
            extra={**common, "agreement": checks.get("core")},
        ),
        mmlu_whole,
        row(
            work=f"{mmlu_work(shape, len(mmlu_requests), len(mmlu))}: log-likelihoods",
            measure="core call",
            ours=mmlu_ours,
            peer=mmlu_peer,
            goal=2.0 if shape.name == "small" else None,
            unit_of_work=len(mmlu_requests),
            unit="requests",
            extra={
                **common,
                "questions": len(mmlu),
                "requests": len(mmlu_requests),
                "agreement": checks.get("mmlu_core"),
            },
        ),
        *generation_whole,
        *generation,
    ]
    inputs = {
        "task": f"{TASK} validation ({len(instances)} questions"
        + (", the whole split)" if shape.questions is None else ", a --limit sample)"),
        "requests": len(requests),
        "mmlu": f"mmlu_<subject>:mc, 5-shot, of {', '.join(MMLU_SUBJECTS)}: the same "
        f"--limit {shape.mmlu_questions} sample of each subject's test questions (OLMo's "
        f"sample, written out for lm-eval as its test split) in the core call "
        f"({len(mmlu_requests)} requests) and the whole commands",
        **(generation_inputs(shape) if shape.generation_prompts is not None else {}),
        "batch_size": BATCH_SIZE,
        "dtype": "float32",
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "repeats_whole_command": repeats,
        "repeats_mmlu_whole_command": mmlu_repeats,
        "repeats_core_call": core_repeats,
        "whole_command_warm_up": WHOLE_WARMUP,
        "order": "core calls first (they warm the page cache), then the whole commands",
        "convention": "joint (lm-eval's tokenization) on both sides",
    }
    return rows, inputs, failures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shapes", default=",".join(SHAPES), help=f"comma-separated: {', '.join(SHAPES)}"
    )
    parser.add_argument(
        "--small", action="store_true", help="a smoke test: a tiny model, a few questions"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per side")
    parser.add_argument(
        "--generation-only",
        action="store_true",
        help="only the generation row (ours against transformers' generate); give a "
        "--results-dir elsewhere so that the full results file is kept",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--peer-venv", type=Path, default=BENCH_VENV, help="the environment with lm-eval"
    )
    args = parser.parse_args(argv)
    if args.small:
        shapes = [SMALL]
    else:
        unknown = [n for n in args.shapes.split(",") if n not in SHAPES]
        if unknown:
            parser.error(f"unknown shapes {unknown}: expected {', '.join(SHAPES)}")
        shapes = [SHAPES[n] for n in args.shapes.split(",")]
    if not (args.peer_venv / "bin" / "lm_eval").exists():
        raise SystemExit(f"{args.peer_venv} has no lm_eval: `make bench-venv` creates it")

    rows: list[dict[str, Any]] = []
    inputs: dict[str, Any] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="eval_throughput_") as tmp:
        for shape in shapes:
            runner = run_generation_only if args.generation_only else run_shape
            shape_rows, shape_inputs, shape_failures = runner(
                shape, Path(tmp), peer_venv=args.peer_venv, repeats=args.repeats
            )
            rows += shape_rows
            inputs[shape.name] = shape_inputs
            failures += shape_failures
    packages = ["torch", "transformers", "tokenizers"]
    write_results(
        "eval_throughput",
        rows=rows,
        inputs=inputs,
        versions={
            "ours": versions(sys.executable, ["olmo-lab", *packages]),
            "bench": versions(args.peer_venv / "bin" / "python", ["lm_eval", *packages]),
        },
        extra={"agreement_failures": failures},
        folder=args.results_dir,
    )
    if failures:
        print("the sides failed or do not agree:\n  " + "\n  ".join(failures), file=sys.stderr)
    return {"rows": rows, "inputs": inputs, "failures": failures}


if __name__ == "__main__":
    sys.exit(1 if main()["failures"] else 0)
