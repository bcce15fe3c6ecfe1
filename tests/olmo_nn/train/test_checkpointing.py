"""Checkpointing's safety pieces on their own: the DCP metadata unpickler, the data files
metadata may name, how a failed save is reported, re-saving a step, and rank 0's errors."""

from __future__ import annotations

import errno
import os
import pathlib
import pickle
import shutil
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp

import olmo_nn.train.checkpointing as checkpointing
from olmo_nn.checkpoint.integrity import write_manifest
from olmo_nn.parallel import DistributedContext
from olmo_nn.train.checkpointing import (
    DiskFullError,
    UnsafeCheckpointError,
    read_dcp_metadata,
    read_train_state,
    remove_staging_folders,
    save_sharded,
    verify_sharded,
)
from olmo_nn.train.trainer import on_main_rank

ONE_PROCESS = DistributedContext(0, 1, 0, torch.device("cpu"), False)


def unpickle(data: bytes, tmp_path: Path) -> Any:
    path = tmp_path / ".metadata"
    path.write_bytes(data)
    with path.open("rb") as file:
        return checkpointing._MetadataUnpickler(file, path).load()


def global_pickle(module: str, name: str) -> bytes:
    """A pickle of the object ``module.name`` (the GLOBAL opcode, then STOP)."""
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n."


def dcp_folder(folder: Path) -> Path:
    """A small DCP checkpoint with its sha256 record."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save({"w": torch.ones(2, 3), "b": torch.zeros(3, dtype=torch.bfloat16)},
                 checkpoint_id=str(folder))  # fmt: skip
    write_manifest(folder)
    return folder


# ------------------------------------------------------------------ the unpickler
@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("builtins", "eval"),
        ("os", "system"),
        ("torch", "load"),
        ("torch.distributed.checkpoint.metadata", "Enum"),  # imported there, not defined
        ("pathlib", "os.system"),  # a dotted name
        ("this", "s"),  # a module nothing imported yet
    ],
)
def test_unpickler_refuses_anything_else(tmp_path: Path, module: str, name: str) -> None:
    imported = module in sys.modules
    with pytest.raises(UnsafeCheckpointError) as error:
        unpickle(global_pickle(module, name), tmp_path)
    assert str(error.value) == (
        f"{tmp_path / '.metadata'}: refusing to unpickle {module}.{name}: only "
        "torch.distributed.checkpoint's metadata classes are allowed; the checkpoint was "
        "tampered with, or written by an unsupported torch or Python version"
    )
    assert (module in sys.modules) == imported  # refused before importing it


@pytest.mark.parametrize(
    "value",
    [torch.Size([2, 3]), torch.bfloat16, pathlib.PosixPath("/runs/a"), pathlib.PurePosixPath("b")],
    ids=str,
)
def test_unpickler_admits_what_dcp_metadata_holds(tmp_path: Path, value: object) -> None:
    assert unpickle(pickle.dumps(value), tmp_path) == value


def test_unpickler_admits_posix_path_as_python_3_13_pickles_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not hasattr(pathlib, "_local"):  # before 3.13: stand in its module, holding the class
        local = types.ModuleType("pathlib._local")
        local.PosixPath = pathlib.PosixPath  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "pathlib._local", local)
    data = b"\x80\x02cpathlib._local\nPosixPath\nX\x07\x00\x00\x00/runs/a\x85R."
    assert unpickle(data, tmp_path) == pathlib.PosixPath("/runs/a")


def test_unpickler_reads_real_dcp_metadata(tmp_path: Path) -> None:
    folder = dcp_folder(tmp_path / "ckpt")
    metadata = read_dcp_metadata(folder / ".metadata")
    assert metadata == pickle.loads((folder / ".metadata").read_bytes())
    assert metadata.state_dict_metadata["w"].size == torch.Size([2, 3])  # type: ignore[union-attr]


# ------------------------------------------------------------------ the data files it names
@pytest.mark.parametrize(
    "name", ["../other/__0_0.distcp", "/tmp/__0_0.distcp", "sub/__0_0.distcp", "unlisted.distcp"]
)
def test_metadata_naming_a_file_outside_the_record_is_refused(tmp_path: Path, name: str) -> None:
    folder = dcp_folder(tmp_path / "ckpt")
    metadata = pickle.loads((folder / ".metadata").read_bytes())
    for info in metadata.storage_data.values():
        info.relative_path = name
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    (folder / "sub").mkdir()
    shutil.copy(folder / "__0_0.distcp", folder / "sub")  # listed, but not a bare name
    write_manifest(folder)  # the record rewritten to match
    (folder / "unlisted.distcp").write_bytes(b"")  # present, but added after the record
    with pytest.raises(UnsafeCheckpointError) as error:
        read_dcp_metadata(folder / ".metadata")
    assert str(error.value) == (
        f"{folder / '.metadata'} names {name!r} as a data file, which is not a file listed in "
        f"{folder / 'SHA256SUMS'}: refusing to read it; the checkpoint was tampered with"
    )


# ------------------------------------------------------------------ a failed save
@pytest.mark.parametrize(
    ("error", "low_on_space", "disk_full"),
    [
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), False, True),
        (RuntimeError("unexpected pos 704 vs 598"), True, True),
        (RuntimeError("unexpected pos 704 vs 598"), False, False),
        (RuntimeError("a bug"), True, False),
        (PermissionError(errno.EACCES, "Permission denied"), True, False),
    ],
    ids=["ENOSPC", "short-write-low-space", "short-write", "other-error", "other-OSError"],
)
def test_only_a_full_disk_is_reported_as_one(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    low_on_space: bool,
    disk_full: bool,
) -> None:
    free = 1000 if low_on_space else 10**12
    usage = shutil._ntuple_diskusage(10**12, 10**12 - free, free)  # type: ignore[attr-defined]
    monkeypatch.setattr(checkpointing.shutil, "disk_usage", lambda _path: usage)
    final = tmp_path / "step000001"
    with pytest.raises(BaseException) as raised, checkpointing._saving(final, needed=10**6):
        raise error
    if disk_full:
        assert type(raised.value) is DiskFullError
        assert str(raised.value) == (
            f"no space left on device: saving {final} needs about 1.0 MB and "
            f"{free / 1e6:.1f} MB are free; its partial files were removed. Free some space "
            "and run the same command again to resume from the last checkpoint (the error: "
            f"{type(error).__name__}: {error})"
        )
    else:
        assert raised.value is error


# ------------------------------------------------------------------ re-saving a step
def save(run_dir: Path, note: str) -> Path:
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return save_sharded(run_dir, 1, model, optimizer, {"note": note}, {}, ONE_PROCESS, keep=2)


def test_resaving_a_step_replaces_it(tmp_path: Path) -> None:
    save(tmp_path, "first")
    final = save(tmp_path, "second")
    verify_sharded(final)
    assert read_train_state(final) == {"note": "second"}
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step000001"]


def test_crash_while_resaving_a_step_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    final = save(tmp_path, "first")
    real_rename = Path.rename

    def killed_before_renaming_the_new_one(self: Path, target: Any) -> Path:
        if self.name == ".step000001.partial":
            raise KeyboardInterrupt  # SIGKILL between the two renames
        return real_rename(self, target)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "rename", killed_before_renaming_the_new_one)
        with pytest.raises(KeyboardInterrupt):
            save(tmp_path, "second")
    assert not final.exists()
    removed = remove_staging_folders(tmp_path)  # the next start
    assert [p.name for p in removed] == [".step000001.partial"]
    assert f"restored {final}, which an interrupted save had moved aside" in capsys.readouterr().err
    verify_sharded(final)
    assert read_train_state(final) == {"note": "first"}
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step000001"]


# ------------------------------------------------------------------ rank 0's work
def test_on_main_rank_returns_the_result_or_raises_the_error() -> None:
    def refuse() -> int:
        raise ValueError("refused")

    assert on_main_rank(ONE_PROCESS, lambda: 7) == 7
    with pytest.raises(ValueError, match="refused"):
        on_main_rank(ONE_PROCESS, refuse)
