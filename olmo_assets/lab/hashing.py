"""DVC's content hash of a file or folder, computed without DVC.

An artifact's data version in Dagster is the hash DVC records for the same folder in
``dvc.lock``, so the two tools name one version of an artifact alike. DVC 3 hashes a file as
the MD5 of its bytes, and a folder as the MD5 of its listing, ``json.dumps`` of
``[{"md5": <file hash>, "relpath": <posix path>}, ...]`` sorted by path, with
``sort_keys=True``, followed by ``.dir``. Empty folders take no part, nor do the files DVC
ignores: DVC's own (``.git``, ``.hg``, ``.dvc``) and those matched by the ``.dvcignore`` files
of the repository (the root's and any between it and the folder; DVC refuses one inside a
folder it hashes).

Only ``pathspec`` is needed, the gitignore matcher DVC itself uses; DVC is not imported (it
lives in its own environment).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pathspec import GitIgnoreSpec

__all__ = ["DVCIGNORE", "dvc_md5", "file_md5", "find_dvc_root"]

DVCIGNORE = ".dvcignore"
_ALWAYS_IGNORED = GitIgnoreSpec.from_lines([".hg/", ".git/", ".git", ".dvc/"])
_CHUNK = 1 << 20


def file_md5(path: str | os.PathLike[str]) -> str:
    """The MD5 of a file's bytes (DVC 3's ``md5``: no line-ending normalization)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def find_dvc_root(path: str | os.PathLike[str]) -> Path | None:
    """The nearest folder at or above ``path`` holding ``.dvc/``, or ``None``."""
    here = Path(path).resolve()
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return None


def _ignore_rules(folder: Path) -> list[tuple[Path, GitIgnoreSpec]]:
    """The ``.dvcignore`` files in force inside ``folder``, outermost first, each with the
    folder its patterns are relative to."""
    root = find_dvc_root(folder)
    if root is None:
        return []
    parts = folder.relative_to(root).parts
    rules = []
    for depth in range(len(parts)):
        where = root.joinpath(*parts[:depth])
        if (where / DVCIGNORE).is_file():
            lines = (where / DVCIGNORE).read_text(encoding="utf-8").splitlines()
            rules.append((where, GitIgnoreSpec.from_lines(lines)))
    return rules


def _ignored(path: Path, is_dir: bool, rules: list[tuple[Path, GitIgnoreSpec]]) -> bool:
    """Gitignore's precedence: the last pattern that matches decides (``!`` re-includes)."""
    suffix = "/" if is_dir else ""
    if _ALWAYS_IGNORED.match_file(path.name + suffix):
        return True
    ignored = False
    for where, spec in rules:
        verdict = spec.check_file(path.relative_to(where).as_posix() + suffix).include
        if verdict is not None:
            ignored = verdict
    return ignored


def _listing(folder: Path) -> list[dict[str, str]]:
    rules = _ignore_rules(folder)
    entries = []
    pending = [folder]
    while pending:
        current = pending.pop()
        for entry in os.scandir(current):
            path = Path(entry.path)
            is_dir = entry.is_dir()
            if _ignored(path, is_dir, rules):
                continue
            if is_dir:
                pending.append(path)
            elif entry.name == DVCIGNORE:
                raise ValueError(
                    f"{path}: DVC refuses a {DVCIGNORE} inside a folder it tracks; move its "
                    f"patterns to the repository's {DVCIGNORE}"
                )
            else:
                relpath = path.relative_to(folder).as_posix()
                entries.append({"md5": file_md5(path), "relpath": relpath})
    return sorted(entries, key=lambda e: e["relpath"])


def dvc_md5(path: str | os.PathLike[str]) -> str:
    """The hash DVC 3 records for ``path`` in ``dvc.lock`` (``<md5>`` or ``<md5>.dir``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: nothing to hash")
    if not path.is_dir():
        return file_md5(path)
    listing = json.dumps(_listing(path.resolve()), sort_keys=True).encode("utf-8")
    return hashlib.md5(listing, usedforsecurity=False).hexdigest() + ".dir"
