"""Training checkpoints: sharded (torch.distributed.checkpoint) for resuming at any world
size, unsharded (safetensors) for sharing.

Layout under ``RUN_DIR/checkpoints/``::

    step000100/             sharded: DCP files + config.yaml + train_state.json + SHA256SUMS
    step000100-unsharded/   config.yaml + model.safetensors + train_state.json + SHA256SUMS

Both are written under a temporary name and renamed into place once complete, ``SHA256SUMS``
(the sha256 of every file, :mod:`olmo_nn.checkpoint.integrity`) last, so a crash or SIGKILL
mid-save leaves the previous checkpoint intact and loadable. A failed save removes its staging
folder (the trainer removes any that a killed save left at its next start), and one that ran
out of disk space says so (:class:`DiskFullError`). ``train_state.json`` carries the step,
tokens seen, the data position (instances consumed), the RNG state and the step-skipping
detector.

Resuming verifies every file against ``SHA256SUMS`` before reading any, and unpickles nothing
but DCP's own metadata: ``.metadata`` goes through an unpickler that admits only the
``torch.distributed.checkpoint`` metadata classes (anything else is an
:class:`UnsafeCheckpointError`), and DCP's non-tensor items load with
``torch.load(weights_only=True)``. :func:`resume_checkpoint` skips a damaged checkpoint for the
newest intact one, saying why.
"""

from __future__ import annotations

import base64
import errno
import json
import pickle
import re
import shutil
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch
import torch.distributed.checkpoint as dcp
import torch.distributed.checkpoint.metadata as dcp_metadata
import yaml
from torch import nn
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
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
    "verify_sharded",
]

TRAIN_STATE_FILE = "train_state.json"
_DCP_METADATA_FILE = ".metadata"
_SHARDED = re.compile(r"^step(\d+)$")
_UNSHARDED = re.compile(r"^step(\d+)-unsharded$")
_WRAPPER_PREFIXES = ("_orig_mod.", "_checkpoint_wrapped_module.")
_ALLOWED_GLOBALS = frozenset(
    {
        ("torch", "Size"),
        ("torch.serialization", "_get_layout"),
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("pathlib", "PosixPath"),
        ("pathlib", "WindowsPath"),
        ("collections", "OrderedDict"),
    }
)
"""What DCP's ``.metadata`` pickles besides its metadata classes and torch dtypes."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint's pickle names something other than DCP's metadata: it was tampered with."""


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


def remove_staging_folders(run_dir: Path) -> list[Path]:
    """Remove what interrupted saves left in ``checkpoints/`` (hidden folders and files).

    Only for the process that holds the run directory's lock: no other save can be running.
    """
    folder = run_dir / "checkpoints"
    removed = [path for path in folder.glob(".*")] if folder.is_dir() else []
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return removed


def read_train_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / TRAIN_STATE_FILE).read_text(encoding="utf-8"))


class _MetadataUnpickler(pickle.Unpickler):
    """Admits DCP's metadata classes, torch dtypes and :data:`_ALLOWED_GLOBALS`, nothing else."""

    def __init__(self, file: IO[bytes], path: Path) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        found = getattr(sys.modules.get(module), name, None)
        allowed = (
            (module, name) in _ALLOWED_GLOBALS
            or (module == "torch" and isinstance(found, torch.dtype))
            or (  # a class defined there, not one it imports
                module == dcp_metadata.__name__
                and isinstance(found, type)
                and found.__module__ == module
            )
        )
        if not allowed:
            raise UnsafeCheckpointError(
                f"{self.path}: refusing to unpickle {module}.{name}: only "
                "torch.distributed.checkpoint's metadata classes are allowed; the checkpoint was "
                "tampered with"
            )
        return super().find_class(module, name)


def read_dcp_metadata(path: Path) -> dcp_metadata.Metadata:
    """DCP's ``.metadata`` file, unpickled admitting nothing but its metadata classes."""
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
    """Every file matches ``SHA256SUMS`` and ``.metadata`` holds DCP metadata only.

    Raises :class:`CheckpointError` (damaged), or :class:`UnsafeCheckpointError` (tampered).
    """
    present = [p.name for p in checkpoint.iterdir() if p.is_file() and p.name != MANIFEST_FILE]
    verify_manifest(checkpoint, {*present, _DCP_METADATA_FILE, TRAIN_STATE_FILE})
    read_dcp_metadata(checkpoint / _DCP_METADATA_FILE)


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


def _out_of_space(error: BaseException) -> bool:
    """Whether ENOSPC is anywhere in the error's chain (DCP wraps each rank's failure)."""
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
            return True
        failures = getattr(current, "failures", None)
        pending += [current.__cause__, current.__context__, *(failures or {}).values()]
    return False


@contextmanager
def _saving(final: Path, needed: int, staging: Path | None = None) -> Iterator[None]:
    """Remove ``staging`` when the block fails; name a failure for want of disk space.

    A full disk does not always surface as ENOSPC (torch reports a torn write as "unexpected
    pos"), so a failure is also put down to it when less than ``needed`` bytes are free.
    """
    try:
        yield
    except BaseException as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, KeyboardInterrupt | SystemExit):
            raise
        free = shutil.disk_usage(final.parent).free
        if _out_of_space(error) or free < needed:
            raise DiskFullError(
                f"no space left on device: saving {final} needs about {needed / 1e6:.1f} MB "
                f"and {free / 1e6:.1f} MB are free; its partial files were removed. Free some "
                "space and run the same command again to resume from the last checkpoint"
            ) from error
        raise


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
    """Every rank writes its shards; the folder appears under its final name when complete."""
    final = checkpoint_dir(run_dir, step)
    staging = final.with_name(f".{final.name}.partial")
    if ctx.is_main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    ctx.barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    with _saving(final, _nbytes(state), staging if ctx.is_main else None):
        with warnings.catch_warnings():
            # A single process saves without a process group, as intended.
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.save(state, checkpoint_id=str(staging))
        ctx.barrier()
        if ctx.is_main:
            (staging / "config.yaml").write_text(
                yaml.safe_dump(config, sort_keys=False), encoding="utf-8"
            )
            (staging / TRAIN_STATE_FILE).write_text(
                json.dumps(train_state, indent=1), encoding="utf-8"
            )
            write_manifest(staging)  # last: the record of a complete checkpoint
    if ctx.is_main:
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        for _, old in _checkpoints(run_dir, _SHARDED)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
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
