"""Names that become paths: each must be one safe path part inside its folder."""

from __future__ import annotations

import re

__all__ = ["SAFE_NAME", "safe_name"]

#: Letters, digits, ``_`` and ``-``, starting with a letter or digit: never ``.``, ``..``,
#: a hidden name, a separator (``/``, ``\``) or anything a shell or DVC would read apart.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def safe_name(kind: str, name: object, *, names: str = "a folder") -> str:
    """``name`` if it is one safe path part, else ``ValueError`` saying what is allowed.

    ``kind`` says what the name is (``"source"``), ``names`` what it names (the message's
    end: ``since it names a folder``).
    """
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise ValueError(
            f"{kind} name {name!r} is not allowed: use letters, digits, '_' and '-' "
            f"(starting with a letter or digit), since it names {names}"
        )
    return name
