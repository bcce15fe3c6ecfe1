"""What a downstream task is: its spec (:class:`TaskSpec`) and its examples as instances.

Each example becomes an :class:`Instance`: one ``(context, continuation)`` pair per choice;
a scorer ranks the choices by log P(continuation | context) under the task's normalization.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from olmo_nn.eval.formats import FORMATS, Format, MultipleChoice

__all__ = [
    "NORMALIZATIONS",
    "UNCONDITIONAL_CONTEXT",
    "Example",
    "Formatted",
    "Instance",
    "Normalization",
    "TaskSpec",
]

Normalization = Literal["none", "per_token", "per_char", "unconditional"]
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)
UNCONDITIONAL_CONTEXT = "Answer:"

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
    olmes_shots: str | None = None
    """OLMES's name of the task whose curated shots the wheel ships (in its rendered 5-shot
    requests), used when there is no ``shot_split``; ``None``: none shipped."""
    olmes_shot_formats: tuple[Format, ...] = ()
    """The formats whose prompts are OLMES's own, so that its shots fit them."""
    default_num_shots: int = 0
    """Shots when none are asked for (MMLU: 5, as reported)."""
    description: str = ""
    """Text before the shots and the prompt (MMLU's ``The following are …``)."""
    f1_positive: int | None = None
    """The choice that F1 counts as the positive class, for a task OLMo reports by F1
    (``metric_type="f1"``: MRPC, whose positive is `` yes``, choice 0); ``None``: no F1."""

    def __post_init__(self) -> None:
        if self.f1_positive is not None and self.f1_positive < 0:
            raise ValueError(
                f"f1_positive={self.f1_positive} of task {self.name!r}: expected a choice index "
                "(0 or more) or None"
            )
        if self.format not in FORMATS:
            raise ValueError(f"format={self.format!r} of task {self.name!r}: not one of {FORMATS}")
        if self.default_normalization not in NORMALIZATIONS:
            raise ValueError(
                f"default_normalization={self.default_normalization!r} of task {self.name!r} "
                f"is not one of {NORMALIZATIONS}"
            )
