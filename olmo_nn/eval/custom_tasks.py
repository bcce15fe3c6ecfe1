"""Custom tasks: a YAML file that says how to format a JSONL of examples."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from olmo_nn.eval.task_spec import (
    NORMALIZATIONS,
    UNCONDITIONAL_CONTEXT,
    Example,
    Formatted,
    Normalization,
    TaskSpec,
)

__all__ = ["CustomTaskConfig"]


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
