"""Typed configuration: keyword-only dataclasses that round-trip through YAML.

Every config in the lab (model, data, training, evaluation) derives from :class:`Config`.
``from_dict`` refuses unknown keys by name and lists the valid ones, nested configs are
rebuilt from plain mappings, and ``to_dict``/``to_yaml`` give the exact tree that goes into
checkpoints, MLflow and ``params.yaml``. Dotted ``key=value`` overrides (the command line's
form) are applied with :meth:`Config.with_overrides`.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Self

import yaml

__all__ = ["Config", "ConfigError"]


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it and says how to fix it."""


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """Turn a plain YAML value into the annotated type (nested configs, enums, tuples)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        if len(options) == 1:
            return _convert(value, options[0], where)
        return value
    if isinstance(annotation, type) and issubclass(annotation, Config):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{where}: expected a mapping for {annotation.__name__}, got {value!r}"
            )
        return annotation.from_dict(value, _where=where)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        try:
            return annotation(value)
        except ValueError:
            valid = ", ".join(repr(m.value) for m in annotation)
            raise ConfigError(f"{where}: {value!r} is not one of {valid}") from None
    if origin is tuple and isinstance(value, list | tuple):
        return tuple(value)
    if origin is list and isinstance(value, list | tuple):
        (item,) = typing.get_args(annotation) or (Any,)
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _to_plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _parse_scalar(text: str) -> Any:
    """Parse an override's right-hand side the way YAML would (``1e-4``, ``true``, ``null``)."""
    parsed = yaml.safe_load(text)
    if isinstance(parsed, str):
        try:
            return float(parsed) if any(c in parsed for c in ".eE") else int(parsed)
        except ValueError:
            return parsed
    return parsed


@dataclasses.dataclass(kw_only=True)
class Config:
    """Base class: subclasses are ``@dataclass(kw_only=True)`` with a docstring per field."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, _where: str = "") -> Self:
        """Build from a plain mapping; unknown keys raise :class:`ConfigError` naming them."""
        names = cls.field_names()
        unknown = [k for k in data if k not in names]
        prefix = f"{_where}." if _where else ""
        if unknown:
            raise ConfigError(
                f"unknown {cls.__name__} key(s): {', '.join(prefix + str(k) for k in unknown)}; "
                f"valid keys are: {', '.join(names)}"
            )
        hints = _field_types(cls)
        kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in data.items()}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> Self:
        data = yaml.safe_load(text) or {}
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"expected a YAML mapping for {cls.__name__}, got {type(data).__name__}"
            )
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        return cls.from_yaml(path.read_text(encoding="utf-8"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (validated again)."""
        return self.from_dict({**self.to_dict(), **{k: _to_plain(v) for k, v in changes.items()}})

    def with_overrides(self, overrides: Iterable[str]) -> Self:
        """Apply ``a.b.c=value`` strings (values parsed as YAML scalars)."""
        data = self.to_dict()
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like key=value (e.g. d_model=512)")
            dotted, raw = item.split("=", 1)
            keys = dotted.strip().split(".")
            node = data
            for key in keys[:-1]:
                child = node.get(key)
                if not isinstance(child, dict):
                    raise ConfigError(f"override {item!r}: {key!r} is not a config section")
                node = child
            node[keys[-1]] = _parse_scalar(raw.strip())
        return self.from_dict(data)
