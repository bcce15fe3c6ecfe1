"""The two OLMES formats of a multiple-choice task, and the few-shot prompt layout.

* ``rc`` (rank classification, "cloze"): the choices' texts are the continuations, ranked by
  log P(choice | prompt) under the task's normalization (the task's own formatter).
* ``mc`` (multiple choice with lettered options): the prompt lists the options, one a line,
  and the continuations are the letters::

      Question: Which technology was developed most recently?
       A. cellular telephone
       B. television
       C. refrigerator
       D. airplane
      Answer:

  scored as `` A``, `` B``, … (each label carries a leading space, so each letter is one
  token both in the options and in the answer). This is OLMES's layout (Gu et al., 2024).

A task name picks its format with a suffix, ``arc_easy:mc`` or ``arc_easy:rc``; a name
without one is ``rc``: the format OLMo 1 reported and the one OLMES found informative for
small models, which score near chance on letters until they learn the format (OLMES reports
the better of the two per model; ask for both and compare).

Few-shot (OLMES's and lm-evaluation-harness's layout): the task's description (MMLU:
``The following are multiple choice questions (with answers) about {subject}.\\n\\n``),
then each shot as its correct choice's full text (prompt and answer) followed by a blank line,
then the evaluated example's prompt::

    {description}{shot 1 prompt}{shot 1 answer}\\n\\n…{shot K prompt}{shot K answer}\\n\\n{prompt}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "DEFAULT_FORMAT",
    "FORMATS",
    "LETTERS",
    "Format",
    "MultipleChoice",
    "few_shot_context",
    "partition_key",
    "split_task_name",
    "task_of_partition",
]

Format = Literal["rc", "mc"]
FORMATS: tuple[str, ...] = get_args(Format)
DEFAULT_FORMAT: Format = "rc"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
SHOT_SEPARATOR = "\n\n"
FORMAT_SEPARATOR = ":"
"""Between a task and its format in a task name (``arc_easy:mc``)."""
PARTITION_FORMAT_SEPARATOR = "-"
"""The same in a partition key, a folder or a DVC stage name (``arc_easy-mc``), where ``:``
is not allowed (:data:`olmo_nn.paths.SAFE_NAME`). No task name holds a ``-``."""


@dataclass(frozen=True)
class MultipleChoice:
    """One example as a question with options, for the ``mc`` format."""

    question: str
    """Everything before the options, with its prefix (``Question: …``, ``Goal: …``)."""
    choices: list[str]
    label: int
    answer_prefix: str = "Answer:"
    cleanup: Callable[[str], str] | None = None
    """Applied to the whole rendered prompt, as OLMES does for HellaSwag (it preprocesses the
    query after rendering it, options included)."""

    def prompt(self) -> str:
        """The question, `` A. {choice}`` a line, then the answer prefix (then ``cleanup``)."""
        if len(self.choices) > len(LETTERS):
            raise ValueError(f"{len(self.choices)} choices: at most {len(LETTERS)} have letters")
        options = "\n".join(
            f" {letter}. {choice}" for letter, choice in zip(LETTERS, self.choices, strict=False)
        )
        prompt = f"{self.question}\n{options}\n{self.answer_prefix}"
        return prompt if self.cleanup is None else self.cleanup(prompt)

    def continuations(self) -> list[str]:
        """`` A``, `` B``, …: one per choice."""
        return [" " + letter for letter in LETTERS[: len(self.choices)]]


def split_task_name(name: str) -> tuple[str, Format | None]:
    """``"arc_easy:mc"`` -> ``("arc_easy", "mc")``; ``"arc_easy"`` -> ``("arc_easy", None)``."""
    base, colon, suffix = name.partition(":")
    if not colon:
        return name, None
    if suffix not in FORMATS:
        raise ValueError(
            f"task {name!r}: format {suffix!r} is not one of {', '.join(FORMATS)} "
            f"(write {base}:rc for rank classification or {base}:mc for lettered options)"
        )
    return base, suffix  # type: ignore[return-value]


def partition_key(task: str) -> str:
    """A task name as a partition key, folder and stage name: ``"arc_easy:mc"`` ->
    ``"arc_easy-mc"``, a name without a format unchanged; :func:`task_of_partition` inverts it."""
    base, fmt = split_task_name(task)
    return base if fmt is None else base + PARTITION_FORMAT_SEPARATOR + fmt


def task_of_partition(key: str) -> str:
    """The task name of a partition key: ``"arc_easy-mc"`` -> ``"arc_easy:mc"``, a key without
    a ``-<format>`` ending unchanged. A task name (``arc_easy:mc``) is a ``ValueError`` that
    gives its key."""
    if FORMAT_SEPARATOR in key:
        raise ValueError(
            f"{key!r} is a task name, not a partition key: a key cannot hold "
            f"{FORMAT_SEPARATOR!r}; write {partition_key(key)}"
        )
    base, separator, suffix = key.rpartition(PARTITION_FORMAT_SEPARATOR)
    if separator and suffix in FORMATS:
        return base + FORMAT_SEPARATOR + suffix
    return key


def few_shot_context(description: str, shots: list[tuple[str, str]], context: str) -> str:
    """``description``, each shot's ``context + answer`` and a blank line, then ``context``."""
    return description + "".join(c + a + SHOT_SEPARATOR for c, a in shots) + context
