"""Per-request log-likelihoods equal lm-evaluation-harness's, for both tokenization conventions.

A small random OLMo (OLMo's tokenizer and 50,304-row vocabulary) is exported for transformers;
ours scores it through ``load_language_model("hf:...")`` (our ``OLMo`` reading the exported
weights), lm-eval through its ``HFLM`` (transformers' ``OlmoForCausalLM``). The requests are
the first ARC-Easy questions of our task (every choice) plus requests whose contexts end in a
space or are empty, where the conventions differ:

* ``"joint"`` (lm-eval's own): end to end, ``simple_evaluate`` on a local lm-eval task file
  (YAML + JSONL of our contexts and choices), compared request by request with its logged
  samples, and accuracy against ours; plus ``HFLM.loglikelihood`` on the extra requests.
* ``"separate"`` (Catwalk's, our default): lm-eval is fed our token ids through
  ``HFLM._loglikelihood_tokens``.

MMLU, 5-shot, on local copies of two subjects' test and dev splits (JSON lines, the rows our
task reads):

* lm-eval's own ``mmlu_<subject>`` task (its installed ``_default_template_yaml``: its prompt,
  ``first_n`` shots from dev) pointed at the local data: each request's log-likelihood from
  ours equals lm-eval's, and its shots are ours, in our order.
* a lettered multiple-choice task for lm-eval in a local YAML that renders OLMES's layout
  (``Question: …``, `` A. …`` lines, ``Answer:``; shots joined by blank lines): its requests
  are exactly our ``mmlu_<subject>:mc`` 5-shot requests, and the scores and accuracy agree.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from olmo_nn.checkpoint import save_checkpoint
from olmo_nn.eval.downstream import evaluate_task
from olmo_nn.eval.mmlu import description
from olmo_nn.eval.models import LanguageModel, load_language_model
from olmo_nn.eval.scoring import Request, encode_requests, score_requests
from olmo_nn.eval.task_data import load_split
from olmo_nn.eval.tasks import Instance, load_task
from olmo_nn.hf import export_hf
from olmo_nn.model import OLMo, TransformerConfig

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_name, "1")  # nothing here may reach the hub

TOLERANCE = 1e-4
QUESTIONS = 12
TASK = "arc_easy_parity"
CONFIG = TransformerConfig(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=128)
BOUNDARY_REQUESTS = [
    # Contexts ending in a space (BPE merges across the boundary) and an empty context.
    Request("Fill in: the sky is ", "blue"),
    Request("Fill in: the sky is ", "green and yellow"),
    Request("The answer is  ", " 42"),
    Request("", " an empty context"),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("parity")
    torch.manual_seed(0)
    model = OLMo(CONFIG)
    model.init_weights(seed=0)
    return export_hf(save_checkpoint(model, root / "checkpoint"), root / "hf", dtype="float32")


@pytest.fixture(scope="module")
def ours(folder: Path) -> LanguageModel:
    model = load_language_model(f"hf:{folder}", dtype=torch.float32)
    assert isinstance(model.module, OLMo)  # our implementation, not transformers'
    return model


@pytest.fixture(scope="module")
def hflm(folder: Path) -> Any:
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(folder), backend="causal", device="cpu", batch_size=8,
                dtype="float32")  # fmt: skip


@pytest.fixture(scope="module")
def instances() -> list[Instance]:
    return load_task("arc_easy", limit=None)[:QUESTIONS]


def _write_task(instances: list[Instance], folder: Path) -> None:
    """An lm-eval multiple-choice task over exactly our contexts and choices."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{TASK}.jsonl"
    with data.open("w", encoding="utf-8") as out:
        for instance in instances:
            (context,) = set(instance.contexts)
            assert all(c.startswith(" ") for c in instance.continuations)
            record = {
                "doc_id": instance.doc_id,
                "context": context,
                "choices": [c[1:] for c in instance.continuations],
                "label": instance.label,
            }
            out.write(json.dumps(record) + "\n")
    (folder / f"{TASK}.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        f"  data_files: {{validation: {json.dumps(str(data))}}}\n"
        f"  cache_dir: {json.dumps(str(folder / 'cache'))}\n"
        "output_type: multiple_choice\n"
        "validation_split: validation\n"
        "doc_to_text: context\n"
        "doc_to_choice: choices\n"
        "doc_to_target: label\n"
        'target_delimiter: " "\n'
        "metric_list:\n"
        "  - metric: acc\n"
    )


def _their_requests(out: dict[str, Any], task: str) -> tuple[list[Request], list[float]]:
    """lm-eval's logged (context, continuation) pairs and log-likelihoods, by doc id."""
    samples = sorted(out["samples"][task], key=lambda sample: sample["doc_id"])
    requests: list[Request] = []
    logprobs: list[float] = []
    for sample in samples:
        arguments = sample["arguments"]
        if isinstance(arguments, dict):  # {"gen_args_0": {"arg_0": context, "arg_1": ...}}
            arguments = [tuple(arguments[f"gen_args_{i}"].values()) for i in range(len(arguments))]
        requests += [Request(context, continuation) for context, continuation in arguments]
        logprobs += [float(logprob) for logprob, _ in sample["filtered_resps"]]
    return requests, logprobs


def test_joint_convention_equals_lm_eval_on_a_local_task(
    ours: LanguageModel, hflm: Any, instances: list[Instance], tmp_path: Path
) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    _write_task(instances, tmp_path / "tasks")
    out = simple_evaluate(
        model=hflm,
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(tmp_path / "tasks")),
        log_samples=True,
        bootstrap_iters=0,
    )
    assert out is not None
    their_requests, theirs = _their_requests(out, TASK)
    requests = [Request(c, x) for instance in instances for c, x in instance.pairs]
    assert their_requests == requests  # the same prompts, choices and delimiter
    mine = [s.logprob_sum for s in score_requests(ours, requests, convention="joint")]
    assert mine == pytest.approx(theirs, abs=TOLERANCE)
    result = evaluate_task(ours, "arc_easy", instances, default_normalization="none",
                           convention="joint", normalizations="none")  # fmt: skip
    assert result.accuracy["none"] == pytest.approx(out["results"][TASK]["acc,none"])


def test_joint_convention_equals_hflm_loglikelihood(ours: LanguageModel, hflm: Any) -> None:
    from lm_eval.api.instance import Instance as LMInstance

    requests = BOUNDARY_REQUESTS
    lm_instances = [
        LMInstance(
            request_type="loglikelihood", doc={}, arguments=(r.context, r.continuation), idx=i
        )
        for i, r in enumerate(requests)
    ]
    theirs = [logprob for logprob, _ in hflm.loglikelihood(lm_instances, disable_tqdm=True)]
    mine = score_requests(ours, requests, convention="joint")
    assert [s.logprob_sum for s in mine] == pytest.approx(theirs, abs=TOLERANCE)


def test_separate_convention_equals_hflm_on_the_same_tokens(
    ours: LanguageModel, hflm: Any, instances: list[Instance]
) -> None:
    requests = [Request(c, x) for instance in instances[:4] for c, x in instance.pairs]
    requests += BOUNDARY_REQUESTS
    encoded = encode_requests(ours.tokenizer, requests, "separate")
    joint = encode_requests(ours.tokenizer, requests, "joint")
    assert encoded != joint  # the boundary requests tokenize differently: a real check
    eos = ours.tokenizer.eos_token_id
    assert eos is not None
    # lm-eval's own stand-in for an empty context is the end-of-text token, as ours.
    tokens = [
        ((r.context, r.continuation), c or [eos], x)
        for r, (c, x) in zip(requests, encoded, strict=True)
    ]
    theirs = [logprob for logprob, _ in hflm._loglikelihood_tokens(tokens, disable_tqdm=True)]
    mine = score_requests(ours, requests, convention="separate")
    assert [s.logprob_sum for s in mine] == pytest.approx(theirs, abs=TOLERANCE)
    # And the two conventions do give different scores on the boundary requests.
    joint_scores = score_requests(ours, BOUNDARY_REQUESTS, convention="joint")
    assert any(
        abs(a.logprob_sum - b.logprob_sum) > 1e-3
        for a, b in zip(mine[-len(BOUNDARY_REQUESTS) :], joint_scores, strict=True)
    )


MMLU_SUBJECTS = ("abstract_algebra", "college_physics")
MMLU_DOCS = 4
"""Test questions per subject: 4 x 4 choices x 2 subjects, 5-shot prompts of ~700 tokens."""

# OLMES's lettered layout as an lm-eval prompt (Jinja), for the local lettered task.
OLMES_MC_TEXT = (
    "Question: {{question.strip()}}\\n A. {{choices[0]}}\\n B. {{choices[1]}}\\n"
    " C. {{choices[2]}}\\n D. {{choices[3]}}\\nAnswer:"
)


def _write_mmlu_data(folder: Path) -> dict[str, dict[str, str]]:
    """Each subject's test and dev splits as JSON lines; the data_files of each subject."""
    files: dict[str, dict[str, str]] = {}
    for subject in MMLU_SUBJECTS:
        files[subject] = {}
        for split in ("test", "dev"):
            path = folder / f"{subject}_{split}.jsonl"
            rows = load_split("hails/mmlu_no_train", subject, split=split).to_pylist()
            path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
            files[subject][split] = str(path)
    return files


def _mmlu_yaml(task: str, subject: str, files: dict[str, str], folder: Path, body: str) -> None:
    (folder / f"{task}.yaml").write_text(
        f"task: {task}\n"
        "dataset_path: json\n"
        "dataset_name: null\n"
        "dataset_kwargs:\n"
        f"  data_files: {json.dumps(files)}\n"
        f"  cache_dir: {json.dumps(str(folder / 'cache'))}\n"
        f"description: {json.dumps(description(subject))}\n" + body
    )


def _evaluate_lm_eval(hflm: Any, tasks: list[str], folder: Path) -> dict[str, Any]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    out = simple_evaluate(
        model=hflm,
        tasks=tasks,
        num_fewshot=5,
        limit=MMLU_DOCS,
        task_manager=TaskManager(include_path=str(folder)),
        log_samples=True,
        bootstrap_iters=0,
    )
    assert out is not None
    return out


def test_mmlu_five_shot_equals_lm_eval_mmlu_task(
    ours: LanguageModel, hflm: Any, tmp_path: Path
) -> None:
    import lm_eval

    template = (
        Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default" / "_default_template_yaml"
    )
    folder = tmp_path / "tasks"
    folder.mkdir()
    files = _write_mmlu_data(tmp_path)
    tasks = []
    for subject in MMLU_SUBJECTS:
        tasks.append(f"lm_eval_mmlu_{subject}")
        _mmlu_yaml(
            tasks[-1], subject, files[subject], folder, f"include: {json.dumps(str(template))}\n"
        )
    out = _evaluate_lm_eval(hflm, tasks, folder)
    worst = 0.0
    for subject, task in zip(MMLU_SUBJECTS, tasks, strict=True):
        requests, theirs = _their_requests(out, task)
        assert len(requests) == MMLU_DOCS * 4
        # Their shots are ours: the subject's dev split, first 5 in order.
        context = requests[0].context
        shots = load_split("hails/mmlu_no_train", subject, split="dev").to_pylist()
        position = 0
        for shot in shots:  # each shot's question after the one before it
            position = context.index(shot["question"].strip(), position) + 1
        assert context.startswith(description(subject)) and context.count("\n\n") == 6
        mine = [s.logprob_sum for s in score_requests(ours, requests, convention="joint")]
        assert mine == pytest.approx(theirs, abs=TOLERANCE)
        worst = max(worst, *(abs(a - b) for a, b in zip(mine, theirs, strict=True)))
    print(f"mmlu 5-shot (lm-eval's template): largest |difference| {worst:.2e}")


def test_lettered_mmlu_task_equals_lm_eval_local_yaml(
    ours: LanguageModel, hflm: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "tasks"
    folder.mkdir()
    files = _write_mmlu_data(tmp_path)
    body = (
        "output_type: multiple_choice\n"
        "test_split: test\n"
        "fewshot_split: dev\n"
        "fewshot_config: {sampler: first_n}\n"
        f'doc_to_text: "{OLMES_MC_TEXT}"\n'
        'doc_to_choice: ["A", "B", "C", "D"]\n'
        "doc_to_target: answer\n"
        'target_delimiter: " "\n'
        'fewshot_delimiter: "\\n\\n"\n'
        "metric_list:\n"
        "  - metric: acc\n"
    )
    tasks = []
    for subject in MMLU_SUBJECTS:
        tasks.append(f"olmes_mc_mmlu_{subject}")
        _mmlu_yaml(tasks[-1], subject, files[subject], folder, body)
    out = _evaluate_lm_eval(hflm, tasks, folder)
    worst = 0.0
    for subject, task in zip(MMLU_SUBJECTS, tasks, strict=True):
        instances = load_task(f"mmlu_{subject}:mc", limit=None, num_shots=5)[:MMLU_DOCS]
        requests, theirs = _their_requests(out, task)
        assert requests == [Request(c, x) for instance in instances for c, x in instance.pairs]
        assert requests[0].continuation == " A" and requests[0].context.endswith("\nAnswer:")
        mine = [s.logprob_sum for s in score_requests(ours, requests, convention="separate")]
        assert mine == pytest.approx(theirs, abs=TOLERANCE)
        worst = max(worst, *(abs(a - b) for a, b in zip(mine, theirs, strict=True)))
        result = evaluate_task(ours, task, instances, default_normalization="none",
                               normalizations="none")  # fmt: skip
        assert result.accuracy["none"] == pytest.approx(out["results"][task]["acc,none"])
    print(f"mmlu:mc 5-shot (local lettered task): largest |difference| {worst:.2e}")
