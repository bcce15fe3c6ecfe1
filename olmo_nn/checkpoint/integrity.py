"""The sha256 record of a checkpoint folder: written last, checked before anything is read.

Every checkpoint folder this lab writes (sharded and unsharded, from the trainer, ``olmo model
init`` and ``olmo import-hf``) ends with ``SHA256SUMS``: one ``<sha256>  <path>`` line per
file, the format ``sha256sum -c`` reads. Loading is strict about folders we write: it refuses
a folder without the record (written by hand or by older code), a listed file that is missing
or whose bytes changed, and a file the loader needs that is not listed. Folders that are not
ours carry no record and are not checked (a Hugging Face folder read by ``olmo import-hf`` or
``hf:PATH``), and neither are files put into a checkpoint folder afterwards (a ``tokenizer.json``
added by hand). The record guards against damage (bit rot, torn copies, a bad ``dvc pull``),
not against someone who rewrites it: nothing that is read is ever unpickled.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "MANIFEST_FILE",
    "CheckpointError",
    "content_hash",
    "file_sha256",
    "read_manifest",
    "verify_manifest",
    "write_manifest",
]

MANIFEST_FILE = "SHA256SUMS"


class CheckpointError(ValueError):
    """A checkpoint folder is damaged, unrecorded or unsafe to read; the message names the file."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> Path:
    """Record the sha256 of every file under ``folder`` (the last file written into it)."""
    files = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST_FILE
    )
    text = "".join(f"{file_sha256(folder / name)}  {name}\n" for name in files)
    path = folder / MANIFEST_FILE
    temporary = path.with_name(f".{MANIFEST_FILE}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return path


def read_manifest(folder: Path) -> dict[str, str]:
    """The sha256 ``SHA256SUMS`` records for each listed file (a :class:`CheckpointError` if none)."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{folder} has no {MANIFEST_FILE} (the sha256 of its files, which every checkpoint "
            "this lab writes records): it was written by hand or by older code, or copied "
            "incompletely, so its weights cannot be verified; re-create it (`olmo import-hf` "
            "for a Hugging Face folder)"
        )
    recorded = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        digest, separator, name = line.partition("  ")
        if not separator or len(digest) != 64 or Path(name).is_absolute() or ".." in name:
            raise CheckpointError(f"{path}, line {number}: not '<sha256>  <file>'")
        recorded[name] = digest
    return recorded


def content_hash(folder: Path, *, verify: bool = True) -> str:
    """A checkpoint's identity: the sha256 of its ``SHA256SUMS``, which names every file it
    wrote with that file's sha256 (so any change to a recorded file changes it).

    ``verify`` first checks every recorded file against the record (reading every byte), so
    the hash stands for the bytes on disk; without it only the record is read, for the writer
    that has just computed it (the trainer's MLflow logger: no second pass over the weights).
    Files added to the folder later are not part of it. A :class:`CheckpointError` when the
    folder has no record or a file does not match it.
    """
    if verify:
        verify_manifest(folder)
    else:
        read_manifest(folder)  # the same error for a folder without a record
    return file_sha256(folder / MANIFEST_FILE)


def verify_manifest(folder: Path, required: Iterable[str] = (), *, only: bool = False) -> None:
    """Check the files ``SHA256SUMS`` lists; each of ``required`` must be listed.

    With ``only``, just the ``required`` files are hashed (e.g. a config read on its own).
    Raises :class:`CheckpointError` naming the first file that fails.
    """
    recorded = read_manifest(folder)
    manifest = folder / MANIFEST_FILE
    required = list(required)
    for name in required:
        if name not in recorded:
            raise CheckpointError(
                f"{folder / name} is not listed in {manifest}: it was not written with the "
                "checkpoint"
            )
    for name, digest in recorded.items():
        if only and name not in required:
            continue
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path} is listed in {manifest} but missing")
        if file_sha256(path) != digest:
            raise CheckpointError(
                f"{path}: its sha256 does not match the one recorded in {manifest} when the "
                "checkpoint was written: the file is corrupted or was modified"
            )
