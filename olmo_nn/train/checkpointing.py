"""Training checkpoints: sharded (torch.distributed.checkpoint) for resuming at any world
size, unsharded (safetensors) for sharing.

Layout under ``RUN_DIR/checkpoints/``::

    step000100/             sharded: DCP files + config.yaml + train_state.json + SHA256SUMS
    step000100-unsharded/   config.yaml + model.safetensors + train_state.json + SHA256SUMS

Both are written under a temporary name and renamed into place once complete, ``SHA256SUMS``
(the sha256 of every file, :mod:`olmo_nn.checkpoint.integrity`) last, so a crash or SIGKILL
mid-save leaves the previous checkpoint intact and loadable; a save that replaces its step's
checkpoint moves the old one aside first, and the trainer's next start moves it back if a
crash left the step without one. A failed save removes its staging folder (the trainer removes
any that a killed save left at its next start), and one that ran out of disk space says so
(:class:`DiskFullError`). ``train_state.json`` carries the step, tokens seen, the data position
(instances consumed), the RNG state and the step-skipping detector.

:func:`save_sharded` returns once the checkpoint is in place. The trainer by default writes
sharded checkpoints in the background instead (:mod:`olmo_nn.train.async_checkpointing`): the
same files through the same staging, record and rename, with DCP's async save writing the
shards and rank 0 hashing and renaming off the training loop.

Resuming verifies the files against ``SHA256SUMS`` before reading any (files added to the
folder afterwards are ignored), and unpickles nothing but DCP's own metadata: ``.metadata``
goes through an unpickler that admits only the ``torch.distributed.checkpoint`` metadata
classes, torch dtypes and paths (anything else is an :class:`UnsafeCheckpointError`), and
whose data files must be listed in ``SHA256SUMS``; DCP's non-tensor items load with
``torch.load(weights_only=True)``. :func:`resume_checkpoint` skips a damaged checkpoint for the
newest intact one, saying why.
"""

from __future__ import annotations

import base64
import collections
import errno
import importlib
import json
import pathlib
import pickle
import re
import shutil
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import torch
import torch.distributed.checkpoint as dcp
import torch.distributed.checkpoint.metadata as dcp_metadata
import yaml
from torch import nn
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.planner import ReadItem
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.tensor import DTensor

from olmo_nn.checkpoint.integrity import (
    MANIFEST_FILE,
    CheckpointError,
    read_manifest,
    verify_manifest,
    write_manifest,
)
from olmo_nn.checkpoint.unsharded import save_state_dict
from olmo_nn.model.config import TransformerConfig
from olmo_nn.parallel import DistributedContext

__all__ = [
    "TRAIN_STATE_FILE",
    "DiskFullError",
    "UnsafeCheckpointError",
    "checkpoint_dir",
    "load_sharded",
    "read_train_state",
    "remove_staging_folders",
    "resume_checkpoint",
    "rng_state",
    "save_sharded",
    "save_unsharded",
    "set_rng_state",
    "unshard",
    "verify_sharded",
]

TRAIN_STATE_FILE = "train_state.json"
_DCP_METADATA_FILE = ".metadata"
_SHARDED = re.compile(r"^step(\d+)$")
_UNSHARDED = re.compile(r"^step(\d+)-unsharded$")
_WRAPPER_PREFIXES = ("_orig_mod.", "_checkpoint_wrapped_module.")
_PICKLE_MODULES = frozenset(
    {
        "collections",
        "pathlib",
        "pathlib._local",  # where Python 3.13 defines (and pickles) PosixPath
        "torch",
        "torch.serialization",
        "torch.distributed.checkpoint.filesystem",
        dcp_metadata.__name__,
    }
)
"""The only modules DCP's ``.metadata`` may make the unpickler import."""
_PICKLE_OBJECTS = (
    collections.OrderedDict,
    pathlib.PosixPath,
    pathlib.WindowsPath,
    pathlib.PurePosixPath,
    pathlib.PureWindowsPath,
    torch.Size,
    torch.serialization._get_layout,
    _StorageInfo,
    *(v for v in vars(torch).values() if isinstance(v, torch.dtype)),
    *(
        v
        for v in vars(dcp_metadata).values()
        if isinstance(v, type) and v.__module__ == dcp_metadata.__name__  # not ones it imports
    ),
)
"""What DCP's ``.metadata`` may unpickle, by identity (whatever module a Python version
defines it in): its metadata classes, torch dtypes and sizes, paths."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint's metadata names something other than DCP's metadata classes, or a file
    outside its record: it was tampered with (or written by an unsupported version)."""


class DiskFullError(OSError):
    """A save ran out of disk space; the message says where and how much it needed."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


def checkpoint_dir(run_dir: Path, step: int, *, unsharded: bool = False) -> Path:
    return run_dir / "checkpoints" / (f"step{step:06d}" + ("-unsharded" if unsharded else ""))


def _checkpoints(run_dir: Path, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = pattern.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def _aside(final: Path) -> Path:
    """Where a checkpoint is moved while a new save of its step replaces it."""
    return final.with_name(f".{final.name}.replaced")


def remove_staging_folders(run_dir: Path) -> list[Path]:
    """Remove what interrupted saves left in ``checkpoints/`` (hidden folders and files).

    A checkpoint that a save killed mid-replacement left aside (its step's folder missing) is
    moved back instead. Only for the process that holds the run directory's lock: no other
    save can be running.
    """
    folder = run_dir / "checkpoints"
    removed = []
    for path in sorted(folder.glob(".*")) if folder.is_dir() else []:
        final = folder / path.name[1:].split(".")[0]
        if path == _aside(final) and path.is_dir() and not final.exists():
            path.rename(final)
            print(f"restored {final}, which an interrupted save had moved aside", file=sys.stderr)
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def read_train_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / TRAIN_STATE_FILE).read_text(encoding="utf-8"))


class _MetadataUnpickler(pickle.Unpickler):
    """Admits the objects of :data:`_PICKLE_OBJECTS`, nothing else.

    A name is looked up only in the modules of :data:`_PICKLE_MODULES` (nothing else is
    imported), and only what it names there directly (no dotted names, no lazy attributes).
    """

    def __init__(self, file: IO[bytes], path: Path) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        found = None
        if module in _PICKLE_MODULES and name.isidentifier():
            with suppress(ImportError):  # pathlib._local before Python 3.13
                found = vars(importlib.import_module(module)).get(name)
        if not any(found is allowed for allowed in _PICKLE_OBJECTS):
            raise UnsafeCheckpointError(
                f"{self.path}: refusing to unpickle {module}.{name}: only "
                "torch.distributed.checkpoint's metadata classes are allowed; the checkpoint was "
                "tampered with, or written by an unsupported torch or Python version"
            )
        return found


def read_dcp_metadata(path: Path) -> dcp_metadata.Metadata:
    """DCP's ``.metadata`` file, unpickled admitting nothing but its metadata classes.

    The files it says hold the data (which DCP opens relative to the folder) must be bare file
    names listed in the folder's ``SHA256SUMS``: nothing outside the record is ever read.
    """
    try:
        with path.open("rb") as file:
            metadata = _MetadataUnpickler(file, path).load()
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: the checkpoint is incomplete") from None
    except Exception as error:
        raise CheckpointError(f"{path} is not readable DCP metadata ({error})") from None
    if not isinstance(metadata, dcp_metadata.Metadata):
        raise UnsafeCheckpointError(f"{path} holds a {type(metadata).__name__}, not DCP metadata")
    listed = read_manifest(path.parent)
    storage = metadata.storage_data
    for info in storage.values() if isinstance(storage, dict) else [storage]:
        name = getattr(info, "relative_path", None)
        if not isinstance(name, str) or Path(name).name != name or name not in listed:
            raise UnsafeCheckpointError(
                f"{path} names {name!r} as a data file, which is not a file listed in "
                f"{path.parent / MANIFEST_FILE}: refusing to read it; the checkpoint was "
                "tampered with"
            )
    return metadata


class _SafeReader(FileSystemReader):
    """DCP's file reader, reading ``.metadata`` with the restricted unpickler."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> dcp_metadata.Metadata:
        rank = kwargs.get("rank")
        name = _DCP_METADATA_FILE if rank is None else f"__{rank}{_DCP_METADATA_FILE}"
        metadata = read_dcp_metadata(Path(self.path) / name)
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = dcp_metadata.StorageMeta()
        assert metadata.storage_meta is not None
        metadata.storage_meta.load_id = self.load_id
        return metadata


class _SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's load planner, loading non-tensor items with ``torch.load(weights_only=True)``."""

    def load_bytes(self, read_item: ReadItem, value: Any) -> None:
        from torch.distributed.checkpoint._traverse import set_element

        loaded = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


def verify_sharded(checkpoint: Path) -> None:
    """The files the loader reads are listed in ``SHA256SUMS``, every listed file matches it,
    and ``.metadata`` holds DCP metadata naming listed data files only.

    Files put into the folder afterwards (a ``.DS_Store``) are ignored, with a line on stderr.
    Raises :class:`CheckpointError` (damaged), or :class:`UnsafeCheckpointError` (tampered).
    """
    verify_manifest(checkpoint, [_DCP_METADATA_FILE, TRAIN_STATE_FILE, "config.yaml"])
    read_dcp_metadata(checkpoint / _DCP_METADATA_FILE)
    listed = {*read_manifest(checkpoint), MANIFEST_FILE}
    extra = sorted(p.name for p in checkpoint.iterdir() if p.name not in listed)
    if extra:
        print(
            f"{checkpoint}: ignoring {', '.join(extra)}: not listed in {MANIFEST_FILE} (added "
            "after the checkpoint was written)",
            file=sys.stderr,
        )


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The newest intact sharded checkpoint of a run, or None when it has none.

    A damaged one is skipped with a line on stderr saying why; when every one is damaged
    that is an error, and a tampered one (:class:`UnsafeCheckpointError`) always is.
    """
    found = _checkpoints(run_dir, _SHARDED)
    for _, checkpoint in reversed(found):
        try:
            verify_sharded(checkpoint)
            read_train_state(checkpoint)
        except UnsafeCheckpointError:
            raise
        except (CheckpointError, ValueError, OSError) as error:
            print(f"skipping checkpoint {checkpoint}: {error}", file=sys.stderr)
            continue
        return checkpoint
    if found:
        raise CheckpointError(
            f"no intact checkpoint to resume from in {run_dir / 'checkpoints'}: {len(found)} "
            "damaged (see above); restore the files, or move the folder aside to start over"
        )
    return None


def rng_state() -> dict[str, str]:
    """This process's torch RNG states, JSON-safe (base64)."""
    state = {"cpu": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    if torch.cuda.is_available():
        state["cuda"] = base64.b64encode(torch.cuda.get_rng_state().numpy().tobytes()).decode()
    return state


def set_rng_state(state: dict[str, str]) -> None:
    def tensor(text: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)

    torch.set_rng_state(tensor(state["cpu"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensor(state["cuda"]))


def _clean_name(name: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def _nbytes(tree: Any) -> int:
    """Bytes of the tensors (this process's shards) in a nested state dict."""
    if isinstance(tree, dict):
        return sum(_nbytes(value) for value in tree.values())
    if isinstance(tree, list | tuple):
        return sum(_nbytes(value) for value in tree)
    if isinstance(tree, DTensor):
        tree = tree.to_local()
    return tree.numel() * tree.element_size() if isinstance(tree, torch.Tensor) else 0


_SHORT_WRITE = ("unexpected pos", "short write", "file write failed")
"""What torch says when a write comes up short (on a full disk, often instead of ENOSPC)."""


def _disk_full_cause(error: BaseException, low_on_space: bool) -> BaseException | None:
    """The error in ``error``'s chain (DCP wraps each rank's failure) that a full disk explains:
    ENOSPC, or, when ``low_on_space``, a short write."""
    pending: list[Any] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if isinstance(current, tuple):  # DCP's (exception, traceback) pairs
            current = current[0]
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return current
        failures = getattr(current, "failures", None)
        if low_on_space and failures is None and any(s in str(current) for s in _SHORT_WRITE):
            return current
        pending += [current.__cause__, current.__context__, *(failures or {}).values()]
    return None


@contextmanager
def _saving(final: Path, needed: int, staging: Path | None = None) -> Iterator[None]:
    """Remove ``staging`` when the block fails; name a failure for want of disk space.

    That is ENOSPC, or a short write (torch reports a torn write as "unexpected pos" rather
    than ENOSPC) when less than ``needed`` bytes are free; any other failure is raised as is.
    """
    try:
        yield
    except BaseException as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, KeyboardInterrupt | SystemExit):
            raise
        free = shutil.disk_usage(final.parent).free
        cause = _disk_full_cause(error, low_on_space=free < needed)
        if cause is not None:
            raise DiskFullError(
                f"no space left on device: saving {final} needs about {needed / 1e6:.1f} MB "
                f"and {free / 1e6:.1f} MB are free; its partial files were removed. Free some "
                "space and run the same command again to resume from the last checkpoint "
                f"(the error: {type(cause).__name__}: {cause})"
            ) from error
        raise


def _begin_sharded(run_dir: Path, step: int, ctx: DistributedContext) -> tuple[Path, Path]:
    """The checkpoint's final folder and its empty staging folder (made by rank 0; every rank
    returns once it exists)."""
    final = checkpoint_dir(run_dir, step)
    staging = final.with_name(f".{final.name}.partial")
    if ctx.is_main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    ctx.barrier()
    return final, staging


def _sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    model_state, optim_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optim": optim_state}


def _write_record(staging: Path, train_state: dict[str, Any], config: dict[str, Any]) -> None:
    """Rank 0, once every rank's shards are written: the config, the train state and, last,
    ``SHA256SUMS`` (hashing every file)."""
    (staging / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    (staging / TRAIN_STATE_FILE).write_text(json.dumps(train_state, indent=1), encoding="utf-8")
    write_manifest(staging)  # last: the record of a complete checkpoint


def _put_in_place(run_dir: Path, final: Path, staging: Path, *, keep: int) -> None:
    """Rank 0: rename the complete staging folder to ``final``, then keep the newest ``keep``."""
    if final.exists():  # moved aside, not removed first: a crash here loses no checkpoint
        aside = _aside(final)
        shutil.rmtree(aside, ignore_errors=True)
        final.rename(aside)
        staging.rename(final)
        shutil.rmtree(aside)
    else:
        staging.rename(final)
    for _, old in _checkpoints(run_dir, _SHARDED)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def save_sharded(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_state: dict[str, Any],
    config: dict[str, Any],
    ctx: DistributedContext,
    *,
    keep: int,
) -> Path:
    """Every rank writes its shards; the folder appears under its final name when complete.

    Returns once it is in place (:class:`olmo_nn.train.async_checkpointing.AsyncCheckpointer`
    writes the same files while training goes on).
    """
    final, staging = _begin_sharded(run_dir, step, ctx)
    state = _sharded_state(model, optimizer)
    with _saving(final, _nbytes(state), staging if ctx.is_main else None):
        with warnings.catch_warnings():
            # A single process saves without a process group, as intended.
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.save(state, checkpoint_id=str(staging))
        ctx.barrier()
        if ctx.is_main:
            _write_record(staging, train_state, config)
    if ctx.is_main:
        _put_in_place(run_dir, final, staging, keep=keep)
    ctx.barrier()
    return final


def load_sharded(
    checkpoint: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> dict[str, Any]:
    """Restore model (and optimizer) state from a sharded checkpoint written at any world size.

    The caller verifies it first (:func:`verify_sharded`, on one rank); reading it unpickles
    nothing but DCP's metadata classes and loads no pickle that could run code.
    """
    model_state, optim_state = (
        get_state_dict(model, optimizer)
        if optimizer is not None
        else (get_model_state_dict(model), {})
    )
    state: dict[str, Any] = {"model": model_state}
    if optimizer is not None:
        state["optim"] = optim_state
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, storage_reader=_SafeReader(checkpoint), planner=_SafeLoadPlanner())
    if optimizer is not None:
        set_state_dict(
            model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
        )
    else:
        set_state_dict(model, [], model_state_dict=state["model"], optim_state_dict={})
    return read_train_state(checkpoint)


def save_unsharded(
    run_dir: Path,
    step: int,
    model: nn.Module,
    model_config: TransformerConfig,
    train_state: dict[str, Any],
    config: dict[str, Any],
    ctx: DistributedContext,
) -> Path:
    """Gather the full weights on rank 0 and write the foundation's unsharded format."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    tensors = get_model_state_dict(model, options=options)
    final = checkpoint_dir(run_dir, step, unsharded=True)
    if ctx.is_main:
        clean = {
            _clean_name(name): tensor
            for name, tensor in tensors.items()
            if isinstance(tensor, torch.Tensor)
        }
        if model_config.weight_tying:
            clean.pop("lm_head.weight", None)
        state = {TRAIN_STATE_FILE: json.dumps(train_state, indent=1)}
        with _saving(final, _nbytes(clean)):  # save_state_dict removes its own staging
            save_state_dict(clean, model_config, final, config=config, overwrite=True, files=state)
    ctx.barrier()
    return final


def unshard(checkpoint: Path, output: Path | None = None, *, overwrite: bool = False) -> Path:
    """A sharded checkpoint, written at any world size, as the unsharded checkpoint the trainer
    would have written at its step (the same files), offline in this one process: the model's
    weights, config and train state; the optimizer state stays in the sharded one.

    ``output`` defaults to the trainer's name for it, ``RUN_DIR/checkpoints/stepN-unsharded``.
    """
    from olmo_nn.model.transformer import OLMo

    verify_sharded(checkpoint)
    config = yaml.safe_load((checkpoint / "config.yaml").read_text(encoding="utf-8"))
    model_config = TransformerConfig.from_dict(config["model"], _where="model")
    model = OLMo(model_config, init_device="meta")
    model.to_empty(device="cpu")
    load_sharded(checkpoint, model, None)
    tensors = {_clean_name(name): tensor for name, tensor in model.state_dict().items()}
    if model_config.weight_tying:
        tensors.pop("lm_head.weight", None)
    target = output or checkpoint.with_name(f"{checkpoint.name}-unsharded")
    state = (checkpoint / TRAIN_STATE_FILE).read_text(encoding="utf-8")
    with _saving(target, _nbytes(tensors)):
        save_state_dict(
            tensors,
            model_config,
            target,
            config=config,
            overwrite=overwrite,
            files={TRAIN_STATE_FILE: state},
        )
    return target
