"""Our instances as lm-eval local tasks (``lm_eval --include_path DIR``), and the checks that
``olmo eval downstream`` and ``lm_eval`` did the same work on them.

Each writer puts a JSONL of exactly the examples our command evaluates (our ``--limit``
samples ``sorted(random.Random(1234).sample(...))``, lm-eval's takes the first N, so lm-eval
gets the kept rows and no ``--limit``) beside a YAML that lays them out as we do:

* ARC-Easy (:func:`write_arc_task`): our contexts and choices, ``target_delimiter: " "``.
* MMLU 5-shot lettered (:func:`write_mmlu_tasks`): one task per subject in OLMES's lettered
  layout, the subject's description, its first five dev rows as shots (``fewshot_split: dev``,
  ``sampler: first_n``): the prompts of ``mmlu_<subject>:mc``.
* Generation (:func:`write_generation_task`): our whole prompts, ``generate_until`` with our
  stop strings and ``max_gen_toks``, greedy.

The checks read our ``--dump-requests`` output (``requests.jsonl``, ``results.json``) and
lm-eval's ``--output_path --log_samples`` output, and say whether the requests, log-likelihoods
(within ``tolerance``), accuracies or generations agree.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from olmo_nn.eval.generative import GenerativeInstance, GenerativeTaskSpec
from olmo_nn.eval.mmlu import description
from olmo_nn.eval.scoring import Request
from olmo_nn.eval.task_data import load_split
from olmo_nn.eval.tasks import Instance

ARC_TASK = "arc_easy_local"
MMLU_DATASET = "hails/mmlu_no_train"
# OLMES's lettered layout as an lm-eval prompt (Jinja): the contexts of `mmlu_<subject>:mc`.
LETTERED_TEXT = (
    "Question: {{question.strip()}}\\n A. {{choices[0]}}\\n B. {{choices[1]}}\\n"
    " C. {{choices[2]}}\\n D. {{choices[3]}}\\nAnswer:"
)


def _write_jsonl(records: Sequence[dict[str, Any]], path: Path) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    return path


def _validation_task(name: str, data: Path, output_type: str) -> str:
    """The head of a task's YAML whose validation split is the JSONL ``data``."""
    return (
        f"task: {name}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    validation: {json.dumps(str(data))}\n"
        f"output_type: {output_type}\n"
        "validation_split: validation\n"
    )


def write_arc_task(
    instances: list[Instance], folder: Path, name: str = ARC_TASK
) -> tuple[Path, list[Request]]:
    """``folder/<name>.yaml`` and ``.jsonl``: an lm-eval ``multiple_choice`` task whose
    requests are exactly ours (the context, ``" "`` + each choice); returns the folder to pass
    with ``--include_path`` and the requests in lm-eval's order (question, then choice)."""
    folder.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    requests: list[Request] = []
    for instance in instances:
        (context,) = set(instance.contexts)  # one context shared by the choices (ARC)
        if not all(c.startswith(" ") for c in instance.continuations):
            raise ValueError(f"{instance.doc_id}: a continuation without its leading space")
        records.append(
            {
                "doc_id": instance.doc_id,
                "context": context,
                "choices": [c[1:] for c in instance.continuations],
                "label": instance.label,
            }
        )
        requests.extend(Request(context, c) for c in instance.continuations)
    data = _write_jsonl(records, folder / f"{name}.jsonl")
    (folder / f"{name}.yaml").write_text(
        _validation_task(name, data, "multiple_choice") + "doc_to_text: context\n"
        "doc_to_choice: choices\n"
        "doc_to_target: label\n"
        'target_delimiter: " "\n'
        "metric_list:\n"
        "  - metric: acc\n"
        "  - metric: acc_norm\n",
        encoding="utf-8",
    )
    return folder, requests


def mmlu_task_name(subject: str) -> str:
    return f"mmlu_{subject}_lettered_local"


def write_mmlu_tasks(instances: dict[str, list[Instance]], folder: Path) -> list[str]:
    """One lm-eval task per subject (``instances``: each subject's ``mmlu_<subject>:mc``
    instances, as our ``--limit`` kept them) in OLMES's lettered layout, 5-shot from the dev
    split's first rows; their names, to pass with ``--include_path folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for subject, kept in instances.items():
        test = load_split(MMLU_DATASET, subject, split="test")
        files = {
            "test": str(_write_jsonl(test.take([i.index for i in kept]).to_pylist(),
                                     folder / f"{subject}_test.jsonl")),
            "dev": str(_write_jsonl(load_split(MMLU_DATASET, subject, split="dev").to_pylist(),
                                    folder / f"{subject}_dev.jsonl")),
        }  # fmt: skip
        names.append(mmlu_task_name(subject))
        (folder / f"{names[-1]}.yaml").write_text(
            f"task: {names[-1]}\n"
            "dataset_path: json\n"
            "dataset_name: null\n"
            "dataset_kwargs:\n"
            f"  data_files: {json.dumps(files)}\n"
            f"description: {json.dumps(description(subject))}\n"
            "output_type: multiple_choice\n"
            "test_split: test\n"
            "fewshot_split: dev\n"
            "fewshot_config: {sampler: first_n}\n"
            f'doc_to_text: "{LETTERED_TEXT}"\n'
            'doc_to_choice: ["A", "B", "C", "D"]\n'
            "doc_to_target: answer\n"
            'target_delimiter: " "\n'
            'fewshot_delimiter: "\\n\\n"\n'
            "metric_list:\n"
            "  - metric: acc\n",
            encoding="utf-8",
        )
    return names


def write_generation_task(
    instances: list[GenerativeInstance],
    spec: GenerativeTaskSpec,
    folder: Path,
    *,
    suppress_tokens: Sequence[int] = (),
) -> str:
    """``folder/<task>_local.yaml`` and ``.jsonl``: a ``generate_until`` task over our whole
    prompts (shots included; run it 0-shot) with our stop strings and ``max_gen_toks``,
    greedy, scored by ``exact_match`` against the first gold answer. ``suppress_tokens`` (the
    output rows past the tokenizer's ids, which our argmax never picks) go to transformers'
    ``generate``. Returns the task's name."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{spec.name}_local"
    records = [
        {"doc_id": i.doc_id, "prompt": i.prompt, "answers": i.answers, "target": i.answers[0]}
        for i in instances
    ]
    data = _write_jsonl(records, folder / f"{name}.jsonl")
    generation_kwargs = [
        f"  until: {json.dumps(list(spec.until))}",
        "  do_sample: false",
        f"  max_gen_toks: {spec.max_new_tokens}",
    ]
    if suppress_tokens:
        generation_kwargs.append(f"  suppress_tokens: {json.dumps(list(suppress_tokens))}")
    (folder / f"{name}.yaml").write_text(
        _validation_task(name, data, "generate_until") + "doc_to_text: prompt\n"
        "doc_to_target: target\n"
        "generation_kwargs:\n"
        + "".join(line + "\n" for line in generation_kwargs)
        + "metric_list:\n"
        "  - metric: exact_match\n",
        encoding="utf-8",
    )
    return name


def read_lm_eval_output(folder: Path, name: str) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """lm-eval's metrics for task ``name`` and its logged samples (``--log_samples``)."""
    results = sorted(folder.rglob("results_*.json"))
    samples = sorted(folder.rglob(f"samples_{name}_*.jsonl"))
    if not results or not samples:
        raise FileNotFoundError(f"no lm-eval results or samples for {name} under {folder}")
    metrics = json.loads(results[-1].read_text())["results"][name]
    lines = samples[-1].read_text(encoding="utf-8").splitlines()
    return metrics, [json.loads(line) for line in lines if line.strip()]


def _arguments(sample: dict[str, Any]) -> list[list[Any]]:
    """A logged sample's requests' arguments, each ``[context, continuation or kwargs]``."""
    arguments = sample["arguments"]
    if isinstance(arguments, dict):  # {"gen_args_0": {"arg_0": context, "arg_1": ...}}
        return [list(arguments[f"gen_args_{i}"].values()) for i in range(len(arguments))]
    return [list(a) for a in arguments]


def _their_loglikelihoods(samples: list[dict[str, Any]]) -> dict[tuple[int, int], Any]:
    """(question's position, choice) -> (context, continuation, log-likelihood)."""
    out: dict[tuple[int, int], Any] = {}
    for sample in sorted(samples, key=lambda s: int(s["doc_id"])):
        for choice, (pair, response) in enumerate(
            zip(_arguments(sample), sample["filtered_resps"], strict=True)
        ):
            out[int(sample["doc_id"]), choice] = (pair[0], pair[1], float(response[0]))
    return out


def _our_loglikelihoods(dumped: list[dict[str, Any]], task: str) -> dict[tuple[int, int], Any]:
    """The same for one task of our ``requests.jsonl``, questions numbered in dump order."""
    positions: dict[str, int] = {}
    out: dict[tuple[int, int], Any] = {}
    for r in dumped:
        if r["task"] == task:
            position = positions.setdefault(r["doc_id"], len(positions))
            out[position, r["choice"]] = (r["context"], r["continuation"], r["logprob"])
    return out


def _read_ours(folder: Path) -> tuple[dict[tuple[str, str], float], list[dict[str, Any]]]:
    """Our ``results.json`` as (task, metric) -> value, and our ``requests.jsonl``."""
    rows = json.loads((folder / "results.json").read_text())
    lines = (folder / "requests.jsonl").read_text(encoding="utf-8").splitlines()
    return {(r["task"], r["metric"]): r["value"] for r in rows}, [json.loads(x) for x in lines]


def _compare_loglikelihoods(ours: dict[Any, Any], theirs: dict[Any, Any]) -> dict[str, Any]:
    diffs = [abs(ours[k][2] - theirs[k][2]) for k in ours if k in theirs]
    return {
        "requests": len(ours),
        "same_requests": ours.keys() == theirs.keys()
        and all(ours[k][:2] == theirs[k][:2] for k in ours),
        "max_abs_logprob_diff": max(diffs) if diffs else None,
    }


def check_arc(ours_dir: Path, theirs_dir: Path, task: str) -> dict[str, Any]:
    """Both sides scored the same ARC requests: accuracy and per-request log-likelihoods."""
    values, dumped = _read_ours(ours_dir)
    metrics, samples = read_lm_eval_output(theirs_dir, ARC_TASK)
    return {
        **_compare_loglikelihoods(
            _our_loglikelihoods(dumped, task), _their_loglikelihoods(samples)
        ),
        "ours_acc_none": values.get((task, "acc_none")),
        "lm_eval_acc": metrics.get("acc,none"),
        "ours_acc_per_char": values.get((task, "acc_per_char")),
        "lm_eval_acc_norm": metrics.get("acc_norm,none"),
        "note": "lm-eval's acc_norm divides by the choice's characters without the leading "
        "space, our per_char with it: the two may differ",
    }


def check_mmlu(ours_dir: Path, theirs_dir: Path, subjects: Sequence[str]) -> dict[str, Any]:
    """Both sides scored the same MMLU requests, subject by subject: the requests, the largest
    log-likelihood difference and each subject's accuracy (ours ``acc_none``, lm-eval's
    ``acc``)."""
    values, dumped = _read_ours(ours_dir)
    ours: dict[Any, Any] = {}
    theirs: dict[Any, Any] = {}
    accuracy: dict[str, list[float | None]] = {}
    for subject in subjects:
        task = f"mmlu_{subject}:mc"
        metrics, samples = read_lm_eval_output(theirs_dir, mmlu_task_name(subject))
        ours |= {(subject, *k): v for k, v in _our_loglikelihoods(dumped, task).items()}
        theirs |= {(subject, *k): v for k, v in _their_loglikelihoods(samples).items()}
        accuracy[subject] = [values.get((task, "acc_none")), metrics.get("acc,none")]
    return {
        **_compare_loglikelihoods(ours, theirs),
        "same_acc_per_subject": all(a == b and a is not None for a, b in accuracy.values()),
        "acc_ours_lm_eval": accuracy,
    }


def agrees(check: dict[str, Any] | None, tolerance: float) -> bool:
    """A log-likelihood check passed: the same requests, every difference within
    ``tolerance``, the same accuracy."""
    if check is None:
        return False
    diff = check.get("max_abs_logprob_diff")
    acc = check.get("ours_acc_none")
    same_acc = check.get(
        "same_acc_per_subject", acc is not None and acc == check.get("lm_eval_acc")
    )
    return bool(check.get("same_requests")) and diff is not None and diff <= tolerance and same_acc


def check_generation(ours_dir: Path, theirs_dir: Path, task: str) -> dict[str, Any]:
    """Both sides generated for the same prompts: how many generations (the text, cut at the
    first stop string) are identical, and each side's ``exact_match`` (ours SQuAD-normalized
    against every gold answer, lm-eval's the raw text against the first)."""
    values, dumped = _read_ours(ours_dir)
    mine = [r for r in dumped if r["task"] == task]
    ours = {r["doc_id"]: (r["prompt"], r["generation"]) for r in mine}
    metrics, samples = read_lm_eval_output(theirs_dir, f"{task}_local")
    theirs = {}
    for sample in samples:
        response = sample["filtered_resps"][0]
        text = response[0] if isinstance(response, list) else response
        theirs[sample["doc"]["doc_id"]] = (_arguments(sample)[0][0], text)
    differ = sorted(k for k in ours if k in theirs and ours[k][1] != theirs[k][1])
    return {
        "prompts": len(ours),
        "same_prompts": ours.keys() == theirs.keys()
        and all(ours[k][0] == theirs[k][0] for k in ours),
        "identical_generations": sum(1 for k in ours if k in theirs and ours[k] == theirs[k]),
        "ours_stop_reasons": dict(Counter(r["stop_reason"] for r in mine)),
        "ours_new_tokens": sum(r["num_new_tokens"] for r in mine),
        "ours_empty_generations": sum(1 for r in mine if not r["generation"]),
        "differing": {k: {"ours": ours[k][1], "lm_eval": theirs[k][1]} for k in differ[:3]},
        "ours_exact_match": values.get((task, "exact_match")),
        "lm_eval_exact_match": metrics.get("exact_match,none"),
    }
