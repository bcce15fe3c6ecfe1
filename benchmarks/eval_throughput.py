"""Evaluation: ``olmo eval downstream`` against ``lm_eval --model hf`` on ARC-Easy, same run.

    .venv/bin/python benchmarks/eval_throughput.py [--shapes small,olmo-150m] [--small]
        [--results-dir benchmarks/results] [--peer-venv .venv-bench]

For each model shape a random ``OLMo`` is built once, saved as our checkpoint and exported for
transformers (``export_hf``, float32, OLMo's tokenizer beside it). Our ``arc_easy`` task (the
whole validation split: 570 questions, 2,281 requests; a sample of it at the 150M shape, drawn
the way ``--limit`` draws it) is written out as an lm-eval task: a JSONL of the same contexts
and choices and a YAML (``dataset_path: json``, ``target_delimiter: " "``, metrics ``acc`` and
``acc_norm``) passed with ``--include_path``, so both sides score exactly the same requests.

Whole commands (a child process each, wall time and peak RSS, as a user runs them):

* ``olmo eval downstream --model hf:FOLDER --tasks arc_easy --normalizations none,per_char
  --convention joint``: the same work as lm-eval (its ``acc`` and ``acc_norm`` need only each
  request's own log-likelihood; lm-eval's tokenization), against
* ``lm_eval --model hf --model_args pretrained=FOLDER,dtype=float32 --tasks arc_easy_local
  --include_path DIR --device cpu --batch_size 32 --log_samples``.
* Beside them, for reference: our command with its default normalizations (for ARC that is
  OLMo's ``unconditional`` too, which scores a second set of requests that lm-eval does not).

Core calls: our ``score_requests`` (the model loaded once in this process) against
``HFLM.loglikelihood`` (``benchmarks/peers/lm_eval_loglikelihood.py`` in the peer's
environment, which reports the seconds of the call alone) on the same requests: ARC-Easy's,
and MMLU 5-shot's (the first questions of a few subjects' test splits in the lettered format,
each prompt the subject's description and its five dev shots: long contexts shared by four
one-token continuations, the work of MMLU as OLMo and OLMES report it); and, at the small
shape, generation: our ``generate`` (greedy, KV cache) against transformers' ``generate``
(``benchmarks/peers/transformers_generate.py``) on the same batches of ``nq_open`` 5-shot
prompts, a fixed number of new tokens each (their generations must be identical; new tokens
per second; ``--generation-only`` runs this row alone). They run
first: besides their own figures, they bring both sides' libraries into the page cache, so the
whole commands that follow run without a warm-up of their own (which the budget of
``make bench`` could not afford) and neither side's first run is colder than the other's.

Agreement is checked and recorded: the requests both sides scored (from our
``--dump-requests`` and lm-eval's ``--log_samples``) must be the same, accuracy (ours
``acc_none``, lm-eval's ``acc``) equal and every log-likelihood within 1e-4; a mismatch makes
the script exit non-zero after writing its results. Each row carries its shape's output-layer
share of the forward FLOPs (``d * V`` against the blocks' matmuls, attention scores left out).

``--small`` is a smoke test (a tiny model, a few questions, one run per side, no warm-up):
``tests/benchmarks/test_eval_throughput.py`` runs it with the peer from ``.venv``. Results:
``benchmarks/results/eval_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
from harness import BENCH_VENV, RESULTS, ROOT, Side, compare, row, versions, write_results

from olmo_nn.checkpoint import save_checkpoint
from olmo_nn.eval.generation import GenerationRequest, batches_by_length, generate
from olmo_nn.eval.generative import load_generative_task
from olmo_nn.eval.models import LanguageModel, load_language_model
from olmo_nn.eval.scoring import Request, score_requests
from olmo_nn.eval.tasks import DEFAULT_LIMIT, Instance, load_task
from olmo_nn.hf import export_hf
from olmo_nn.model import OLMo, TransformerConfig, preset

OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}
TASK = "arc_easy"
LOCAL_TASK = "arc_easy_local"
TOLERANCE = 1e-4
BATCH_SIZE = 32
OLMO = str(Path(sys.executable).with_name("olmo"))
PEERS = ROOT / "benchmarks" / "peers"
CORE_SECONDS = r"core seconds: ([0-9.]+)"
MMLU_SUBJECTS = ("abstract_algebra", "anatomy", "college_physics", "marketing")
GENERATION_TASK = "nq_open"
GENERATION_BATCH = 16
GENERATION_NEW_TOKENS = 32
"""Subjects of the MMLU core call; their 5-shot prompts fit every shape's window."""


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
    """MMLU test questions per subject of :data:`MMLU_SUBJECTS` (core call)."""
    generation_prompts: int | None = None
    """Prompts of the generation core call (:data:`GENERATION_TASK`); None: no such row."""


WHOLE_WARMUP = False
"""No untimed run of the whole commands: the core calls, run first, have warmed the page cache
for both sides' libraries and the model files."""

SHAPES = {
    "small": Shape(
        "small",
        TransformerConfig(d_model=256, n_heads=4, n_layers=4),
        questions=None,
        repeats=2,
        core_repeats=2,
        mmlu_questions=25,
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


def build_model(config: TransformerConfig, folder: Path, *, seed: int = 0) -> tuple[Path, Path]:
    """A random ``OLMo`` of ``config``: its checkpoint and its transformers export."""
    torch.manual_seed(seed)
    model = OLMo(config)
    model.init_weights(seed=seed)
    checkpoint = save_checkpoint(model, folder / "checkpoint")
    del model
    return checkpoint, export_hf(checkpoint, folder / "hf", dtype="float32")


def write_lm_eval_task(
    instances: list[Instance], folder: Path, name: str = LOCAL_TASK
) -> tuple[Path, list[Request]]:
    """``folder/<name>.yaml`` and ``.jsonl``: an lm-eval ``multiple_choice`` task whose
    requests are exactly ours (the context, ``" "`` + each choice); returns the folder to pass
    with ``--include_path`` and the requests in lm-eval's order (question, then choice)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    requests: list[Request] = []
    with data.open("w", encoding="utf-8") as out:
        for instance in instances:
            (context,) = set(instance.contexts)  # one context shared by the choices (ARC)
            if not all(c.startswith(" ") for c in instance.continuations):
                raise ValueError(f"{instance.doc_id}: a continuation without its leading space")
            record = {
                "doc_id": instance.doc_id,
                "context": context,
                "choices": [c[1:] for c in instance.continuations],
                "label": instance.label,
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            requests.extend(Request(context, c) for c in instance.continuations)
    (folder / f"{name}.yaml").write_text(
        "\n".join(
            [
                f"task: {name}",
                "dataset_path: json",
                "dataset_kwargs:",
                "  data_files:",
                f"    validation: {json.dumps(str(data))}",
                "output_type: multiple_choice",
                "validation_split: validation",
                "doc_to_text: context",
                "doc_to_choice: choices",
                "doc_to_target: label",
                'target_delimiter: " "',
                "metric_list:",
                "  - metric: acc",
                "  - metric: acc_norm",
                "",
            ]
        ),
        encoding="utf-8",
    )
    return folder, requests


def read_lm_eval_output(folder: Path, name: str = LOCAL_TASK) -> tuple[dict[str, float], Any]:
    """lm-eval's metrics for ``name`` and its logged samples (``--output_path --log_samples``)."""
    results = sorted(folder.rglob("results_*.json"))
    samples = sorted(folder.rglob(f"samples_{name}_*.jsonl"))
    if not results or not samples:
        raise FileNotFoundError(f"no lm-eval results or samples under {folder}")
    metrics = json.loads(results[-1].read_text())["results"][name]
    lines = samples[-1].read_text(encoding="utf-8").splitlines()
    return metrics, [json.loads(line) for line in lines if line.strip()]


def check_whole_commands(ours_dir: Path, theirs_dir: Path) -> dict[str, Any]:
    """Both sides scored the same requests: accuracy and per-request log-likelihoods."""
    ours_rows = json.loads((ours_dir / "results.json").read_text())
    ours_acc = {r["metric"]: r["value"] for r in ours_rows}
    dumped = [
        json.loads(line)
        for line in (ours_dir / "requests.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    ours = {
        (r["doc_id"], r["choice"]): (r["context"], r["continuation"], r["logprob"]) for r in dumped
    }
    metrics, samples = read_lm_eval_output(theirs_dir)
    theirs: dict[tuple[str, int], tuple[str, str, float]] = {}
    for sample in samples:
        arguments = sample["arguments"]
        if isinstance(arguments, dict):  # {"gen_args_0": {"arg_0": context, "arg_1": ...}}
            arguments = [list(arguments[f"gen_args_{i}"].values()) for i in range(len(arguments))]
        for choice, (pair, response) in enumerate(
            zip(arguments, sample["filtered_resps"], strict=True)
        ):
            context, continuation = pair[0], pair[1]
            theirs[sample["doc"]["doc_id"], choice] = (context, continuation, float(response[0]))
    same_requests = ours.keys() == theirs.keys() and all(
        ours[key][:2] == theirs[key][:2] for key in ours
    )
    diffs = [abs(ours[k][2] - theirs[k][2]) for k in ours if k in theirs]
    return {
        "requests": len(ours),
        "same_requests": same_requests,
        "max_abs_logprob_diff": max(diffs) if diffs else None,
        "ours_acc_none": ours_acc.get("acc_none"),
        "lm_eval_acc": metrics.get("acc,none"),
        "ours_acc_per_char": ours_acc.get("acc_per_char"),
        "lm_eval_acc_norm": metrics.get("acc_norm,none"),
        "note": "lm-eval's acc_norm divides by the choice's characters without the leading "
        "space, our per_char with it: the two may differ",
    }


def _agrees(check: dict[str, Any]) -> bool:
    diff = check.get("max_abs_logprob_diff")
    same_acc = check.get("ours_acc_none") == check.get("lm_eval_acc", check.get("ours_acc_none"))
    return (
        bool(check.get("same_requests", True))
        and diff is not None
        and diff <= TOLERANCE
        and (same_acc)
    )


def write_requests(requests: list[Request], path: Path) -> Path:
    """One JSON object a line (``context``, ``continuation``): the peer's core-call input."""
    with path.open("w", encoding="utf-8") as lines:
        for request in requests:
            record = {"context": request.context, "continuation": request.continuation}
            lines.write(json.dumps(record) + "\n")
    return path


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
    peer = Side(
        "HFLM.loglikelihood",
        argv=[
            str(run["peer_venv"] / "bin" / "python"),
            str(PEERS / "lm_eval_loglikelihood.py"),
            str(hf),
            str(write_requests(requests, folder / f"{name}_requests.jsonl")),
            str(peer_out),
            "--batch-size",
            str(BATCH_SIZE),
        ],
        env=run["env"],
        reported_seconds=CORE_SECONDS,
        warmup=False,  # a fresh process each run: the script warms itself up, untimed
    )
    compare([ours, peer], repeats=run["repeats"])
    if not (ours.runs and peer.runs and ours.runs[-1].ok and peer.runs[-1].ok):
        return ours, peer, None
    theirs = json.loads(peer_out.read_text())
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
    peer = Side(
        "transformers generate",
        argv=[
            str(run["peer_venv"] / "bin" / "python"),
            str(PEERS / "transformers_generate.py"),
            str(hf),
            str(batches_file),
            str(peer_out),
            "--max-new-tokens",
            str(GENERATION_NEW_TOKENS),
            "--vocab",
            str(model.tokenizer.vocab_size),
        ],
        env=run["env"],
        reported_seconds=CORE_SECONDS,
        warmup=False,  # a fresh process each run: the script warms itself up, untimed
    )
    compare([ours, peer], repeats=run["repeats"])
    if not (ours.runs and peer.runs and ours.runs[-1].ok and peer.runs[-1].ok):
        return ours, peer, None
    theirs = json.loads(peer_out.read_text())  # in the batches' order
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
    folder = work / shape.name
    print(f"{shape.name}: building a random OLMo ({shape.config.num_params():,} parameters)")
    _, hf = build_model(shape.config, folder)
    model = load_language_model(f"hf:{hf}", dtype=torch.float32)
    repeats = repeats if repeats is not None else shape.core_repeats
    rows, failures = generation_rows(
        shape, model, hf, folder, shape_fields(shape), peer_venv=peer_venv, env=OFFLINE,
        repeats=repeats,
    )  # fmt: skip
    inputs = {**generation_inputs(shape), "dtype": "float32", "device": "cpu",
              "torch_threads": torch.get_num_threads(), "repeats_core_call": repeats}  # fmt: skip
    return rows, inputs, failures


def _fresh(folder: Path) -> Any:
    def clear() -> None:
        shutil.rmtree(folder, ignore_errors=True)

    return clear


def run_shape(
    shape: Shape, work: Path, *, peer_venv: Path, repeats: int | None
) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """Build the shape's model and task, compare the sides; rows, inputs and failures."""
    folder = work / shape.name
    print(f"{shape.name}: building a random OLMo ({shape.config.num_params():,} parameters)")
    _, hf = build_model(shape.config, folder)
    limit = shape.questions if shape.questions is not None else DEFAULT_LIMIT
    instances = load_task(TASK, limit=limit)
    include, requests = write_lm_eval_task(instances, folder / "task")
    core_repeats = repeats if repeats is not None else shape.core_repeats
    repeats = repeats if repeats is not None else shape.repeats
    env = {**OFFLINE, "HF_DATASETS_CACHE": str(work / "hf_datasets_cache")}
    ours_argv = [OLMO, "eval", "downstream", "--tasks", TASK, "--limit", str(limit),
                 "--convention", "joint", "--batch-size", str(BATCH_SIZE), "--dump-requests"]  # fmt: skip
    same = ["--normalizations", "none,per_char"]
    out = {name: folder / name for name in ("ours", "ours_default", "lm_eval")}

    def ours_side(name: str, key: str, model: str, extra: list[str]) -> Side:
        argv = [*ours_argv, "--model", model, "--output", str(out[key]), *extra]
        return Side(name, argv=argv, env=env, before=_fresh(out[key]), warmup=WHOLE_WARMUP)

    lm_eval = Side(
        "lm_eval --model hf",
        argv=[
            str(peer_venv / "bin" / "lm_eval"),
            "--model",
            "hf",
            "--model_args",
            f"pretrained={hf},dtype=float32",
            "--tasks",
            LOCAL_TASK,
            "--include_path",
            str(include),
            "--device",
            "cpu",
            "--batch_size",
            str(BATCH_SIZE),
            "--output_path",
            str(out["lm_eval"]),
            "--log_samples",
        ],
        env=env,
        before=_fresh(out["lm_eval"]),
        warmup=WHOLE_WARMUP,
    )
    failures: list[str] = []
    checks: dict[str, Any] = {}
    # Core calls: the model loaded once here; the peer's script reports its call's seconds.
    scorer = load_language_model(f"hf:{hf}", dtype=torch.float32)
    run = {"peer_venv": peer_venv, "env": env, "repeats": core_repeats}
    print(f"{shape.name}: core calls, {len(requests)} requests, {core_repeats} run(s) each")
    core_ours, core_peer, checks["core"] = compare_core_calls(
        scorer, hf, requests, folder, TASK, **run
    )
    mmlu = [
        instance
        for subject in MMLU_SUBJECTS
        for instance in load_task(f"mmlu_{subject}:mc", limit=None, num_shots=5)[
            : shape.mmlu_questions
        ]
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

    ours = ours_side("olmo eval downstream", "ours", f"hf:{hf}", same)
    ours_default = ours_side("olmo eval (default norms)", "ours_default", f"hf:{hf}", [])
    whole = [ours, lm_eval, ours_default]
    print(f"{shape.name}: whole commands, {len(requests)} requests, {repeats} run(s) each")
    compare(whole, repeats=repeats)

    if lm_eval.runs and all(r.ok for r in [*ours.runs, *lm_eval.runs]):
        checks["ours"] = check_whole_commands(out["ours"], out["lm_eval"])
        if not _agrees(checks["ours"]):
            failures.append(f"{shape.name} whole commands: {checks['ours']}")
    else:
        failures.append(
            f"{shape.name} whole commands: a run failed, so the sides were not compared"
        )

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
    ]
    rows.append(
        row(
            work=f"{task}: log-likelihoods",
            measure="core call",
            ours=core_ours,
            peer=core_peer,
            unit_of_work=len(requests),
            unit="requests",
            extra={**common, "agreement": checks.get("core")},
        )
    )
    rows.append(
        row(
            work=f"MMLU 5-shot {len(mmlu_requests)} requests ({len(mmlu)} questions of "
            f"{len(MMLU_SUBJECTS)} subjects, lettered), {shape.name}: log-likelihoods",
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
        )
    )
    rows += generation
    inputs = {
        "task": f"{TASK} validation ({len(instances)} questions"
        + (", the whole split)" if shape.questions is None else ", a --limit sample)"),
        "requests": len(requests),
        "mmlu": f"mmlu_<subject>:mc, 5-shot, the first {shape.mmlu_questions} test questions "
        f"of {', '.join(MMLU_SUBJECTS)} ({len(mmlu_requests)} requests)",
        **(generation_inputs(shape) if shape.generation_prompts is not None else {}),
        "batch_size": BATCH_SIZE,
        "dtype": "float32",
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "repeats_whole_command": repeats,
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
