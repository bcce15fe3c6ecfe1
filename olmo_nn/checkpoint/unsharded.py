"""Unsharded checkpoints: a folder with ``config.yaml`` and ``model.safetensors``.

``config.yaml`` holds the resolved run config; its ``model`` section is the full
:class:`TransformerConfig`. Other sections (training state, data position) are carried through
untouched, so the trainer can add what it needs. Loading reads safetensors only: nothing is
ever unpickled. Writes are atomic: the folder is assembled under a temporary name and renamed
into place, so a crash never leaves a checkpoint that looks complete. The last file written is
``SHA256SUMS``, and loading verifies every file against it first (see
:mod:`olmo_nn.checkpoint.integrity`: strict for the folders we write).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from olmo_nn.atomic import staged_folder
from olmo_nn.checkpoint.integrity import CheckpointError, verify_manifest, write_manifest
from olmo_nn.model.config import TransformerConfig
from olmo_nn.model.transformer import OLMo

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "check_safetensors",
    "check_tensor_shapes",
    "load_checkpoint_config",
    "load_model",
    "load_state_dict_into",
    "open_safetensors",
    "read_safetensors",
    "read_weights",
    "save_checkpoint",
    "save_state_dict",
    "verify_weights",
]

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"


def _checkpoint_dir(path: str | os.PathLike[str]) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder} is not an unsharded checkpoint: {name} is missing "
                f"(expected {CONFIG_FILE} and {WEIGHTS_FILE}; for a Hugging Face folder use "
                "`olmo import-hf`)"
            )
    return folder


def load_checkpoint_config(
    path: str | os.PathLike[str],
) -> tuple[TransformerConfig, dict[str, Any]]:
    """The model config and the whole config mapping of a checkpoint folder (verified)."""
    folder = _checkpoint_dir(path)
    verify_manifest(folder, [CONFIG_FILE], only=True)
    data = yaml.safe_load((folder / CONFIG_FILE).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ValueError(f"{folder / CONFIG_FILE} has no 'model' section with the model config")
    return TransformerConfig.from_dict(data["model"], _where="model"), data


def read_safetensors(path: Path, *, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a damaged file is a ``CheckpointError`` naming it."""
    try:
        return load_file(str(path), device=str(device))
    except SafetensorError as error:
        raise CheckpointError(
            f"{path} is not a readable safetensors file (truncated or corrupted): {error}"
        ) from None


def check_safetensors(path: Path) -> None:
    """Read a safetensors file's header only: a damaged file is a ``CheckpointError`` naming it."""
    try:
        with safe_open(str(path), "pt"):
            pass
    except SafetensorError as error:
        raise CheckpointError(
            f"{path} is not a readable safetensors file (truncated or corrupted): {error}"
        ) from None


def verify_weights(path: str | os.PathLike[str]) -> Path:
    """Verify an unsharded checkpoint folder's files; the path of its weights file."""
    folder = _checkpoint_dir(path)
    verify_manifest(folder, [CONFIG_FILE, WEIGHTS_FILE])
    return folder / WEIGHTS_FILE


def read_weights(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """The weights of an unsharded checkpoint folder, after verifying its files."""
    return read_safetensors(verify_weights(path), device=device)


@contextmanager
def open_safetensors(path: Path) -> Iterator[Any]:
    """A safetensors file opened lazily: ``keys()``, ``get_slice(name).get_shape()`` and
    ``get_tensor(name)`` read one tensor (on CPU) when asked, not the file; a damaged file is
    a ``CheckpointError`` naming it. Verify the file first (:func:`verify_weights`)."""
    try:
        with safe_open(str(path), "pt") as handle:
            yield handle
    except SafetensorError as error:
        raise CheckpointError(
            f"{path} is not a readable safetensors file (truncated or corrupted): {error}"
        ) from None


def check_tensor_shapes(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], *, source: str
) -> None:
    """Refuse ``found`` tensors (name -> shape) that are not exactly the ``expected`` ones,
    naming any missing, unexpected or misshapen tensor."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{source} does not match its config: missing tensors {missing or 'none'}, "
            f"unexpected tensors {unexpected or 'none'}"
        )
    for name, shape in found.items():
        if tuple(shape) != tuple(expected[name]):
            raise ValueError(
                f"{source}: tensor {name!r} has shape {tuple(shape)} but the config "
                f"implies {tuple(expected[name])}"
            )


def load_state_dict_into(
    model: OLMo, tensors: dict[str, torch.Tensor], *, source: str, assign: bool = False
) -> None:
    """Copy named tensors into ``model``, naming any missing, unexpected or misshapen tensor."""
    check_tensor_shapes(
        {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()},
        {name: tuple(tensor.shape) for name, tensor in tensors.items()},
        source=source,
    )
    model.load_state_dict(tensors, strict=True, assign=assign)


def load_model(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> OLMo:
    """The model of an unsharded checkpoint folder, in eval mode.

    Every file is verified against ``SHA256SUMS`` first: a folder without it, or a file that
    changed since it was written, is a :class:`CheckpointError` naming the file.
    """
    tensors = read_weights(path, device=device)
    folder = Path(path)
    config, _ = load_checkpoint_config(folder)
    model = OLMo(config, init_device="meta")
    # assign=True adopts the loaded tensors: no second copy of the weights in memory.
    load_state_dict_into(model, tensors, source=str(folder / WEIGHTS_FILE), assign=True)
    if dtype is not None:
        model.to(dtype=dtype)
    return model.eval()


def save_checkpoint(
    model: OLMo,
    path: str | os.PathLike[str],
    *,
    config: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` (and the rest of the run ``config``) as an unsharded checkpoint."""
    return save_state_dict(
        model.state_dict(), model.config, path, config=config, overwrite=overwrite
    )


def save_state_dict(
    tensors: dict[str, torch.Tensor],
    model_config: TransformerConfig,
    path: str | os.PathLike[str],
    *,
    config: dict[str, Any] | None = None,
    overwrite: bool = False,
    files: Mapping[str, str] | None = None,
) -> Path:
    """Write named tensors (e.g. a gathered FSDP state dict) as an unsharded checkpoint.

    ``files`` are more text files to write into it (name -> text), covered by ``SHA256SUMS``.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
    full_config = dict(config or {})
    full_config["model"] = model_config.to_dict()
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with staged_folder(target) as staging:
        staging.mkdir()
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        (staging / CONFIG_FILE).write_text(
            yaml.safe_dump(full_config, sort_keys=False), encoding="utf-8"
        )
        for name, text in (files or {}).items():
            (staging / name).write_text(text, encoding="utf-8")
        write_manifest(staging)
    return target
