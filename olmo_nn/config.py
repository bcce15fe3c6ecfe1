"""Typed configuration: keyword-only dataclasses that round-trip through YAML.

Every config in the lab (model, data, training, evaluation) derives from :class:`Config`.
``from_dict`` refuses unknown keys by name (suggesting the closest valid one), names missing
required keys, checks every value against its field's annotation and rebuilds nested configs
from plain mappings; ``to_dict``/``to_yaml`` give the exact tree that goes into checkpoints,
MLflow and ``params.yaml``. Dotted ``key=value`` overrides (the command line's form) are
applied with :meth:`Config.with_overrides`.

A value that does not fit its annotation raises :class:`ConfigError` in one format, naming
the dotted field, the value as given and the type in words::

    model.d_model: expected an integer, got 'abc' (str)
    data.paths[2]: expected a string, got 7 (int)

What each annotation accepts (what YAML and the command line produce):

- ``int``: integers, and floats with an integral value (``1e6``, ``2.0``: scientific notation
  is a float in YAML); not ``2.5``, not booleans.
- ``float``: numbers, stored as floats; not booleans or words. A string in scientific
  notation (``1e-4``, which YAML 1.1 reads as a string) is read as the number.
- ``bool``: only YAML's booleans (``true``/``false``), not ``1``, ``0`` or ``"maybe"``.
- ``str``: only strings (and ``Path`` objects, as their text). ``name: 123`` is refused
  rather than turned into ``'123'``, since YAML would already have changed ``1.10`` into
  ``1.1`` or ``0755`` into ``493``: quote it (``name: '123'``).
- ``Path``: strings and paths.
- enums and ``Literal[...]``: one of the listed values.
- ``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``: lists (or tuples) whose items are checked,
  named by index (``data.paths[2]``); ``dict[K, V]``: mappings, each entry named
  ``field.key``.
- ``X | None``: null or an ``X``; other unions: a value any member accepts.
- nested :class:`Config`: a mapping, checked field by field (``model.d_model``).
- ``Any``: anything.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import numbers
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any, Self

import yaml

__all__ = ["Config", "ConfigError"]


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it and says how to fix it."""

    field: str | None = None
    """The dotted field whose value has the wrong type (``model.d_model``), when that is
    what the error is about."""


_NONE = type(None)
#: A number YAML 1.1 leaves as a string because it has no dot (``1e-4``, ``3E5``).
_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_WORDS: dict[Any, str] = {
    int: "an integer",
    float: "a number",
    bool: "a boolean (true or false)",
    str: "a string",
    Path: "a path",
    list: "a list",
    tuple: "a list",
    dict: "a mapping",
}


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _describe(annotation: Any) -> str:
    """The annotation in words, as error messages say it (``an integer or null``)."""
    kind, args = typing.get_origin(annotation) or annotation, typing.get_args(annotation)
    if _is_union(annotation):
        return " or ".join(_describe(a) for a in args)
    if annotation is _NONE:
        return "null"
    if kind is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in kind)
    if isinstance(kind, type) and issubclass(kind, Config):
        return f"a mapping for {kind.__name__}"
    if kind is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} items"
    return _WORDS.get(kind, getattr(kind, "__name__", str(kind)))


def _mismatch(value: Any, annotation: Any, where: str) -> ConfigError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    error = ConfigError(
        f"{where}: expected {_describe(annotation)}, got {shown} ({type(value).__name__})"
    )
    error.field = where
    return error


def _number(value: Any) -> int | float | None:
    """``value`` as a number if it is one (booleans are not; NumPy's numbers are), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        return float(value)
    return None


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """Check a plain YAML value against ``annotation`` and turn it into that type.

    Nested configs are rebuilt, enums looked up, lists and tuples checked item by item, ints
    given for floats stored as floats. Anything else that does not fit raises
    :class:`ConfigError` naming ``where`` (see the module docstring for what is accepted).
    """
    kind, args = typing.get_origin(annotation) or annotation, typing.get_args(annotation)
    if annotation is Any or annotation is object:
        return value
    if _is_union(annotation):
        if value is None and _NONE in args:
            return None
        errors: list[ConfigError] = []
        for member in (a for a in args if a is not _NONE):
            try:
                return _convert(value, member, where)
            except ConfigError as error:
                errors.append(error)
        # A member that got the right shape but failed inside says more than the union.
        deeper = [e for e in errors if e.field != where]
        raise deeper[0] if deeper else _mismatch(value, annotation, where)
    if isinstance(kind, type) and issubclass(kind, Config):
        if isinstance(value, kind):
            return value
        if not isinstance(value, Mapping):
            raise _mismatch(value, annotation, where)
        return kind.from_dict(value, _where=where)
    if kind is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
    elif isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(value)
        except ValueError:
            pass
    elif kind in (list, tuple):
        if isinstance(value, list | tuple):
            if kind is tuple and args and args[-1] is not Ellipsis:
                if len(value) != len(args):
                    raise _mismatch(value, annotation, where)
                items = list(args)
            else:
                items = [args[0] if args else Any] * len(value)
            converted = [
                _convert(v, t, f"{where}[{i}]")
                for i, (v, t) in enumerate(zip(value, items, strict=True))
            ]
            return converted if kind is list else tuple(converted)
    elif kind is dict:
        if isinstance(value, Mapping):
            key_type, item_type = args or (Any, Any)
            return {
                _convert(k, key_type, f"{where}.{k}"): _convert(v, item_type, f"{where}.{k}")
                for k, v in value.items()
            }
    elif kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        number = _number(value)
        if isinstance(number, int) or (isinstance(number, float) and number.is_integer()):
            return int(number)
    elif kind is float:
        number = _number(value)
        if number is not None:
            return float(number)
    elif kind is str:
        if isinstance(value, str | PurePath):
            return str(value)
    elif kind is Path:
        if isinstance(value, str | PurePath):
            return Path(value)
    elif not isinstance(kind, type) or isinstance(value, kind):
        return value  # an annotation this function does not know: unchecked
    raise _mismatch(value, annotation, where)


def _section(annotation: Any) -> type[Config] | None:
    """The config class of a nested section (``TransformerConfig``, ``X | None``), if any."""
    for option in typing.get_args(annotation) if _is_union(annotation) else (annotation,):
        if isinstance(option, type) and issubclass(option, Config):
            return option
    return None


def _unknown_keys(cls: type[Config], unknown: list[str], prefix: str) -> str:
    """``unknown X key: d_modle (did you mean d_model?)``; lists the valid keys when some
    unknown key is like none of them. A key that belongs to a section is suggested there
    (``d_model`` on a training config: ``model.d_model``)."""
    names = cls.field_names()
    nested = [
        f"{name}.{sub}"
        for name, hint in _field_types(cls).items()
        if (section := _section(hint)) is not None
        for sub in section.field_names()
    ]
    parts, unmatched = [], False
    for key in unknown:
        close = [n for n in nested if n.endswith(f".{key}")]
        close = close or difflib.get_close_matches(key, names, n=1)
        guess = " or ".join(prefix + c for c in close)
        parts.append(f"{prefix}{key} (did you mean {guess}?)" if close else prefix + key)
        unmatched = unmatched or not close
    plural = "s" if len(unknown) > 1 else ""
    message = f"unknown {cls.__name__} key{plural}: {', '.join(parts)}"
    return message + (f"; valid keys are: {', '.join(names)}" if unmatched else "")


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
        """Build from a plain mapping, checking every value against its field's annotation.

        Unknown keys, missing required keys and values of the wrong type raise
        :class:`ConfigError` naming the dotted field (``_where`` is this config's own path).
        """
        names = cls.field_names()
        prefix = f"{_where}." if _where else ""
        unknown = [str(k) for k in data if k not in names]
        if unknown:
            raise ConfigError(_unknown_keys(cls, unknown, prefix))
        missing = [
            prefix + f.name
            for f in dataclasses.fields(cls)
            if f.name not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            plural = "s" if len(missing) > 1 else ""
            raise ConfigError(f"missing {cls.__name__} key{plural}: {', '.join(missing)}")
        hints = _field_types(cls)
        kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in data.items()}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "YAML text") -> Self:
        """Build from YAML text; ``source`` names it in a parse error (``FILE, line N, ...``)."""
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = "" if mark is None else f", line {mark.line + 1}, column {mark.column + 1}"
            problem = getattr(error, "problem", None) or str(error)
            raise ConfigError(f"{source}{where}: not valid YAML: {problem}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"expected a YAML mapping for {cls.__name__}, got {type(data).__name__}"
            )
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"config file {path} is a directory; give the path of a YAML file")
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            line = raw.count(b"\n", 0, error.start) + 1
            raise ConfigError(
                f"{path}, line {line}: not UTF-8 text (byte 0x{raw[error.start]:02x}); "
                "save the file as UTF-8"
            ) from None
        return cls.from_yaml(text, source=str(path))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (validated again)."""
        return self.from_dict({**self.to_dict(), **{k: _to_plain(v) for k, v in changes.items()}})

    def with_overrides(self, overrides: Iterable[str]) -> Self:
        """Apply ``a.b.c=value`` strings (values parsed as YAML scalars, then type-checked).

        A section that is null (``batch_size_warmup``) or unknown starts as an empty mapping,
        so its missing or unknown keys are named by their full dotted path.
        """
        data = self.to_dict()
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like key=value (e.g. d_model=512)")
            dotted, raw = item.split("=", 1)
            keys = dotted.strip().split(".")
            node = data
            for depth, key in enumerate(keys[:-1]):
                if node.get(key) is None:
                    node[key] = {}
                child = node[key]
                if not isinstance(child, dict):
                    section = ".".join(keys[: depth + 1])
                    raise ConfigError(f"override {item!r}: {section} is not a config section")
                node = child
            node[keys[-1]] = _parse_scalar(raw.strip())
        return self.from_dict(data)
