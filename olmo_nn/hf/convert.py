"""Export our unsharded checkpoints as Hugging Face folders, and import them back.

``export_hf`` writes what ``transformers.AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load offline (``config.json``, ``generation_config.json``,
``model.safetensors``, tokenizer files). ``import_hf`` reads such a folder (one safetensors
file or an indexed set of shards) into our checkpoint format. Nothing is ever unpickled, and
both write atomically: the folder is assembled under a temporary name and renamed into place.
An imported checkpoint records the sha256 of all its files, tokenizer files included; the Hugging
Face folder itself is not ours and carries no record (a damaged safetensors file in it is named).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import tokenizers
import torch
from safetensors.torch import save_file

from olmo_nn.atomic import staged_folder
from olmo_nn.checkpoint.integrity import write_manifest
from olmo_nn.checkpoint.unsharded import (
    load_checkpoint_config,
    load_model,
    read_safetensors,
    save_checkpoint,
)
from olmo_nn.hf.config import (
    hf_config_from_transformer,
    transformer_config_from_hf,
)
from olmo_nn.hf.tokenizer_files import (
    copy_tokenizer_files,
    resolve_export_tokenizer,
    write_tokenizer_files,
)
from olmo_nn.hf.weights import from_hf_state_dict, to_hf_state_dict
from olmo_nn.model.transformer import OLMo

__all__ = ["DTYPES", "export_hf", "hf_state_dict_files", "import_hf"]

#: ``--dtype`` choices for export.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}

HF_CONFIG_FILE = "config.json"
HF_GENERATION_CONFIG_FILE = "generation_config.json"
HF_WEIGHTS_FILE = "model.safetensors"
HF_WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
_PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


# ------------------------------------------------------------------------------------ folders
def _check_target(target: Path, *, overwrite: bool, protected: Path) -> None:
    if target.exists() and not target.is_dir():
        raise ValueError(f"output {target} exists and is not a folder")
    resolved, source = target.resolve(), protected.resolve()
    if resolved == source or resolved in source.parents:
        raise ValueError(
            f"output {target} would replace its own input {protected}; choose another folder"
        )
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{target} already exists and is not empty; pass overwrite=True (--overwrite on the "
            "command line) to replace it"
        )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ------------------------------------------------------------------------------------ export
def export_hf(
    checkpoint_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    tokenizer: str | os.PathLike[str] | None = None,
    dtype: str | torch.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the unsharded checkpoint ``checkpoint_dir`` as a Hugging Face folder ``out_dir``.

    ``tokenizer``: a tokenizer name or path; None takes the checkpoint's ``tokenizer.json``, or
    OLMo's tokenizer when the vocabulary matches. ``dtype``: "float32" or "bfloat16" (None keeps
    the checkpoint's). Returns ``out_dir``. Models transformers cannot express (e.g. an OLMo 2
    block with QKV clipping) raise ``ValueError`` naming the config field.
    """
    source, target = Path(checkpoint_dir), Path(out_dir)
    torch_dtype = _resolve_dtype(dtype)
    config, _ = load_checkpoint_config(source)
    # Everything that can refuse runs before the weights are read.
    hf_config = hf_config_from_transformer(config)
    shipped_tokenizer = resolve_export_tokenizer(tokenizer, source, config)
    _check_target(target, overwrite=overwrite, protected=source)
    model = load_model(source)
    tensors = to_hf_state_dict(model.state_dict(), config, dtype=torch_dtype)
    dtype_name = _dtype_name(torch_dtype or model.embeddings.weight.dtype)
    hf_config.update(dtype=dtype_name, torch_dtype=dtype_name)
    generation_config = {
        "_from_model_config": True,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
    }
    with staged_folder(target) as staging:
        staging.mkdir()
        save_file(tensors, str(staging / HF_WEIGHTS_FILE), metadata={"format": "pt"})
        _write_json(staging / HF_CONFIG_FILE, hf_config)
        _write_json(staging / HF_GENERATION_CONFIG_FILE, generation_config)
        if shipped_tokenizer is not None:
            write_tokenizer_files(shipped_tokenizer, staging, config)
    return target


# ------------------------------------------------------------------------------------ import
def hf_state_dict_files(folder: Path) -> list[Path]:
    """The safetensors files of a Hugging Face folder (one file, or the shards its index
    names); a folder with only pickled weights, or none, is an error saying so."""
    return _safetensors_files(folder)


def _safetensors_files(folder: Path) -> list[Path]:
    """The weight files of a Hugging Face folder: one file, or the shards its index names."""
    if (folder / HF_WEIGHTS_FILE).is_file():
        return [folder / HF_WEIGHTS_FILE]
    index_path = folder / HF_WEIGHTS_INDEX_FILE
    if index_path.is_file():
        weight_map = _read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index_path} has no 'weight_map' naming the shard of each tensor")
        shards = []
        for name in sorted(set(map(str, weight_map.values()))):
            if Path(name).name != name:
                raise ValueError(f"{index_path} names shard {name!r} outside its folder")
            if not (folder / name).is_file():
                raise FileNotFoundError(
                    f"shard {folder / name} named by {index_path} does not exist"
                )
            shards.append(folder / name)
        return shards
    pickled = [name for name in _PICKLE_FILES if (folder / name).is_file()]
    if pickled:
        raise ValueError(
            f"{folder} holds {pickled[0]} (pickle) and no safetensors weights; pickles are never "
            "loaded here. Re-save it with safetensors, e.g. in transformers "
            "`AutoModelForCausalLM.from_pretrained(folder).save_pretrained(out)` (safetensors is "
            "its default format; transformers < 4.35 needs safe_serialization=True)"
        )
    raise FileNotFoundError(f"{folder} has no {HF_WEIGHTS_FILE} or {HF_WEIGHTS_INDEX_FILE}")


def _tokenizer_vocab_size(folder: Path) -> int | None:
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        tokenizer = tokenizers.Tokenizer.from_file(str(path))
    except Exception as error:  # the tokenizers library raises bare Exceptions
        raise ValueError(
            f"{path} is not a tokenizer the tokenizers library can read: {error}"
        ) from error
    return int(tokenizer.get_vocab_size(with_added_tokens=True))


def import_hf(
    hf_dir: str | os.PathLike[str],
    out_checkpoint: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> Path:
    """Convert a Hugging Face OLMo / OLMo 2 folder into our unsharded checkpoint.

    Tokenizer files found in ``hf_dir`` are copied into the checkpoint folder. Other
    architectures, configs our model cannot express and misshapen tensors raise ``ValueError``
    naming the architecture, field or tensor. Returns ``out_checkpoint``.
    """
    folder, target = Path(hf_dir), Path(out_checkpoint)
    if not folder.is_dir():
        raise FileNotFoundError(f"Hugging Face folder {folder} does not exist")
    config_path = folder / HF_CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{folder} has no {HF_CONFIG_FILE}; is it a Hugging Face model folder?"
        )
    hf_config = _read_json(config_path)
    generation_path = folder / HF_GENERATION_CONFIG_FILE
    config = transformer_config_from_hf(
        hf_config,
        tokenizer_vocab_size=_tokenizer_vocab_size(folder),
        generation=_read_json(generation_path) if generation_path.is_file() else None,
        source=str(config_path),
    )
    files = _safetensors_files(folder)
    _check_target(target, overwrite=overwrite, protected=folder)
    hf_tensors: dict[str, torch.Tensor] = {}
    for path in files:
        hf_tensors.update(read_safetensors(path))
    source = str(files[0] if len(files) == 1 else folder / HF_WEIGHTS_INDEX_FILE)
    tensors = from_hf_state_dict(hf_tensors, config, source=source)
    del hf_tensors
    model = OLMo(config, init_device="meta")
    # Names and shapes were checked above; assign keeps one copy of the weights in memory.
    model.load_state_dict(tensors, strict=True, assign=True)
    # Lineage: where the weights came from, so a later reader can trace them back.
    imported_from = {
        "path": str(folder.resolve()),
        "architecture": (hf_config.get("architectures") or [hf_config.get("model_type")])[0],
        "weights": [path.name for path in files],
    }
    with staged_folder(target) as staging:
        save_checkpoint(model, staging, config={"imported_from": imported_from})
        copy_tokenizer_files(folder, staging)
        write_manifest(staging)  # again, now with the tokenizer files
    return target
