"""Training checkpoints: sharded (torch.distributed.checkpoint) for resuming at any world
size, unsharded (safetensors) for sharing.

Layout under ``RUN_DIR/checkpoints/``::

    step000100/             sharded: DCP files + train_state.json + config.yaml
    step000100-unsharded/   config.yaml + model.safetensors + train_state.json

Both are written under a temporary name and renamed into place once complete, so a crash or
SIGKILL mid-save leaves the previous checkpoint intact and loadable; leftovers of an
interrupted save are removed at the next one. ``train_state.json`` carries the step, tokens
seen, the data position (instances consumed), the RNG state and the step-skipping detector.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
import yaml
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from olmo_nn.checkpoint.unsharded import save_state_dict
from olmo_nn.model.config import TransformerConfig
from olmo_nn.parallel import DistributedContext

__all__ = [
    "TRAIN_STATE_FILE",
    "latest_checkpoint",
    "load_sharded",
    "read_train_state",
    "rng_state",
    "save_sharded",
    "save_unsharded",
    "set_rng_state",
]

TRAIN_STATE_FILE = "train_state.json"
_SHARDED = re.compile(r"^step(\d+)$")
_UNSHARDED = re.compile(r"^step(\d+)-unsharded$")
_WRAPPER_PREFIXES = ("_orig_mod.", "_checkpoint_wrapped_module.")


def checkpoint_dir(run_dir: Path, step: int, *, unsharded: bool = False) -> Path:
    return run_dir / "checkpoints" / (f"step{step:06d}" + ("-unsharded" if unsharded else ""))


def _completed(run_dir: Path, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = pattern.match(path.name)
        if match and (path / TRAIN_STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete sharded checkpoint of a run, or None."""
    found = _completed(run_dir, _SHARDED)
    return found[-1][1] if found else None


def read_train_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / TRAIN_STATE_FILE).read_text(encoding="utf-8"))


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


def _write_metadata(folder: Path, train_state: dict[str, Any], config: dict[str, Any]) -> None:
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    # Written last: its presence marks the folder complete.
    (folder / TRAIN_STATE_FILE).write_text(json.dumps(train_state, indent=1), encoding="utf-8")


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
    with warnings.catch_warnings():
        # A single process saves without a process group, as intended.
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(staging))
    ctx.barrier()
    if ctx.is_main:
        _write_metadata(staging, train_state, config)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        for _, old in _completed(run_dir, _SHARDED)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    ctx.barrier()
    return final


def load_sharded(
    checkpoint: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> dict[str, Any]:
    """Restore model (and optimizer) state from a sharded checkpoint written at any world size."""
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
        dcp.load(state, checkpoint_id=str(checkpoint))
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
        save_state_dict(clean, model_config, final, config=config, overwrite=True, files=state)
    ctx.barrier()
    return final
