"""The model under evaluation: one interface over our checkpoints and transformers' models.

>>> model = load_language_model("runs/olmo-1b/step1000")        # a native checkpoint folder
>>> model = load_language_model("hf:/models/OLMo-1B-hf")         # a transformers folder
>>> logits = model.logits(input_ids)                             # (B, T) -> (B, T, V)

Evaluation code sees only :class:`LanguageModel`, so both kinds of model are scored by the
same code (and can be compared token for token when they share a tokenizer).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from olmo_nn.model import OLMo
from olmo_nn.tokenizer import Tokenizer

__all__ = ["HF_PREFIX", "LanguageModel", "load_language_model"]

_PLAIN_HEAD_MODEL_TYPES = frozenset({"olmo", "olmo2", "llama"})
"""transformers model types whose logits are exactly the output layer of the last hidden state
(no logit scaling or soft-capping), so the head can run on selected positions only. Their
decoders also take ``position_ids`` for RoPE and pass a 4D ``attention_mask`` through to the
attention unchanged (``masking_utils``), which is what packed rows need."""
_MASKABLE_ATTENTION = frozenset({"sdpa", "eager"})
"""transformers attention implementations that apply a custom 4D additive mask as given."""

HF_PREFIX = "hf:"
"""A model spec starting with this names a folder that transformers loads."""


class LanguageModel:
    """A causal language model and its tokenizer, in eval mode.

    ``module`` maps token ids (B, T) to logits (B, T, V), either directly (our ``OLMo``) or
    through an output object with ``.logits`` (transformers' models).
    """

    def __init__(
        self,
        module: nn.Module,
        tokenizer: Tokenizer,
        *,
        name: str,
        max_length: int,
        vocab_size: int,
    ) -> None:
        if tokenizer.vocab_size > vocab_size:
            raise ValueError(
                f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} token ids but model "
                f"{name!r} has only {vocab_size} output rows: ids >= {vocab_size} have no "
                "logits. Pair the model with the tokenizer it was trained with (put its "
                "tokenizer.json in the model folder)."
            )
        if max_length <= 1:
            raise ValueError(f"max_length={max_length} must be at least 2")
        self.module = module.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.max_length = max_length
        """Longest input (in tokens) the model accepts."""
        self.vocab_size = vocab_size
        """Rows of the output layer (the logits' last dimension; may exceed the tokenizer's)."""
        self.accepts_packed_rows = _accepts_packed_rows(module)
        """:meth:`logits_at` takes ``position_ids`` and ``attention_mask`` (several sequences in
        one row): our ``OLMo``, and transformers' plain-head models on SDPA or eager attention."""

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, vocab_size) for token ids (B, T), in the model's dtype."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.max_length:
            raise ValueError(
                f"input of {input_ids.shape[1]} tokens exceeds max_length={self.max_length}"
            )
        out = self.module(input_ids.to(self.device))
        return out if isinstance(out, torch.Tensor) else out.logits

    @torch.no_grad()
    def logits_at(
        self,
        input_ids: torch.Tensor,
        rows: torch.Tensor,
        positions: torch.Tensor,
        *,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (N, vocab_size) at ``(rows[i], positions[i])`` of the batch ``input_ids``.

        Equal to ``logits(input_ids)[rows, positions]``, but for our ``OLMo`` and transformers'
        plain-head models the output layer runs on the N selected hidden states only, so the
        (B, T, V) logits tensor is never built.

        Where :attr:`accepts_packed_rows`, ``position_ids`` (B, T) set each token's RoPE
        position and ``attention_mask`` (B, 1, T, T), bool, True where query ``t`` may see key
        ``s``, replaces the causal mask. (No grad rather than inference mode: FSDP2 cannot
        all-gather its parameters into inference tensors.)
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
        packed = position_ids is not None or attention_mask is not None
        if packed and not self.accepts_packed_rows:
            raise ValueError(
                f"model {self.name!r} does not take position_ids or a 4D attention_mask; score "
                "one sequence per row (score_requests(..., share_prefix=False))"
            )
        device = self.device
        input_ids = input_ids.to(device)
        rows, positions = rows.to(device), positions.to(device)
        if position_ids is not None:
            position_ids = position_ids.to(device)
        if attention_mask is not None:
            attention_mask = attention_mask.to(device)
        module: Any = self.module
        if isinstance(module, OLMo):
            # Through forward (not its submodules), so that FSDP gathers the parameters.
            out: torch.Tensor = module(
                input_ids,
                position_ids=position_ids,
                attention_mask=attention_mask,
                logits_at=(rows, positions),
            )
            return out  # (N, V)
        if _is_plain_head(module):
            additive = None
            if attention_mask is not None:
                # transformers adds a 4D float mask to the attention scores as it is.
                dtype = module.get_output_embeddings().weight.dtype
                additive = torch.zeros(attention_mask.shape, dtype=dtype, device=device)
                additive.masked_fill_(~attention_mask, torch.finfo(dtype).min)
            hidden = module.base_model(
                input_ids, position_ids=position_ids, attention_mask=additive
            ).last_hidden_state  # (B, T, d_model)
            return module.get_output_embeddings()(hidden[rows, positions])  # (N, V)
        return self.logits(input_ids)[rows, positions]

    def __repr__(self) -> str:
        return (
            f"LanguageModel(name={self.name!r}, max_length={self.max_length}, "
            f"vocab_size={self.vocab_size}, tokenizer={self.tokenizer.name!r})"
        )


def _is_plain_head(module: nn.Module) -> bool:
    config = getattr(module, "config", None)
    return getattr(config, "model_type", None) in _PLAIN_HEAD_MODEL_TYPES


def _accepts_packed_rows(module: nn.Module) -> bool:
    if isinstance(module, OLMo):
        return True
    config = getattr(module, "config", None)
    return _is_plain_head(module) and (
        getattr(config, "_attn_implementation", None) in _MASKABLE_ATTENTION
    )


def _load_native(folder: Path, *, device: str, dtype: torch.dtype | None) -> LanguageModel:
    from olmo_nn.checkpoint import load_model

    module = load_model(folder, device=device, dtype=dtype)
    config = module.config
    tokenizer_file = folder / "tokenizer.json"
    tokenizer = Tokenizer.from_name_or_path(
        tokenizer_file if tokenizer_file.is_file() else None,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    return LanguageModel(
        module,
        tokenizer,
        name=str(folder),
        max_length=config.max_sequence_length,
        vocab_size=config.padded_vocab_size,
    )


def _load_hf_as_olmo(
    folder: Path, *, device: str, dtype: torch.dtype | None
) -> LanguageModel | None:
    """An OLMo / OLMo 2 folder as our own ``OLMo`` (the same function as transformers'
    ``OlmoForCausalLM``, without importing transformers); None for what ours cannot express."""
    import json

    from olmo_nn.hf.config import transformer_config_from_hf
    from olmo_nn.hf.convert import hf_state_dict_files
    from olmo_nn.hf.weights import from_hf_state_dict

    hf_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    tokenizer = Tokenizer.from_name_or_path(folder)
    generation_path = folder / "generation_config.json"
    try:
        config = transformer_config_from_hf(
            hf_config,
            tokenizer_vocab_size=tokenizer.vocab_size,
            generation=json.loads(generation_path.read_text())
            if generation_path.is_file()
            else None,
            source=str(folder / "config.json"),
        )
    except ValueError:
        return None  # another architecture, or a config ours cannot express: transformers
    from olmo_nn.checkpoint.unsharded import read_safetensors

    tensors: dict[str, torch.Tensor] = {}
    for path in hf_state_dict_files(folder):
        tensors.update(read_safetensors(path))
    state = from_hf_state_dict(tensors, config, source=str(folder))
    del tensors
    if dtype is not None:
        state = {name: tensor.to(dtype) for name, tensor in state.items()}
    module = OLMo(config, init_device="meta")
    module.load_state_dict(state, strict=True, assign=True)
    module = module.to(device)
    return LanguageModel(
        module,
        tokenizer,
        name=f"{HF_PREFIX}{folder}",
        max_length=config.max_sequence_length,
        vocab_size=config.padded_vocab_size,
    )


def _load_hf(
    folder: Path, *, device: str, dtype: torch.dtype | None, implementation: str = "auto"
) -> LanguageModel:
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"{folder} has no tokenizer.json: save the model's fast tokenizer there "
            "(`AutoTokenizer.from_pretrained(...).save_pretrained(folder)`)"
        )
    from olmo_nn.checkpoint.unsharded import check_safetensors

    safetensors = sorted(folder.glob("*.safetensors"))
    pickled = sorted(p.name for p in folder.glob("pytorch_model*.bin"))
    if not safetensors and pickled:
        raise ValueError(
            f"{folder} holds {pickled[0]} (pickle) and no safetensors weights; 'hf:' models "
            "load safetensors only, since unpickling can run code. Re-save it with safetensors, "
            "e.g. in transformers `AutoModelForCausalLM.from_pretrained(folder)"
            ".save_pretrained(out)` (safetensors is its default format)"
        )
    for weights in safetensors:
        check_safetensors(weights)  # a message naming the file, not transformers' traceback
    if implementation == "auto":
        olmo = _load_hf_as_olmo(folder, device=device, dtype=dtype)
        if olmo is not None:
            return olmo
    try:
        import transformers
    except ImportError as error:  # pragma: no cover - transformers is a dependency
        raise ImportError(
            "loading an 'hf:' model needs transformers (`pip install transformers`)"
        ) from error
    kwargs: dict[str, Any] = {"dtype": dtype} if dtype is not None else {}
    module: Any = transformers.AutoModelForCausalLM.from_pretrained(
        folder, use_safetensors=True, **kwargs
    )
    module = module.to(device)
    config = module.config
    max_length = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", None
    )
    if max_length is None:
        raise ValueError(f"{folder}: config.json names no max_position_embeddings")
    output = module.get_output_embeddings()
    vocab_size = int(output.weight.shape[0]) if output is not None else int(config.vocab_size)
    return LanguageModel(
        module,
        Tokenizer.from_name_or_path(folder),
        name=f"{HF_PREFIX}{folder}",
        max_length=int(max_length),
        vocab_size=vocab_size,
    )


def load_language_model(
    spec: str | os.PathLike[str],
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    implementation: Literal["auto", "transformers"] = "auto",
) -> LanguageModel:
    """A native checkpoint folder, or ``hf:FOLDER`` for a transformers model folder.

    An ``hf:`` folder of an architecture our ``OLMo`` expresses (OLMo, OLMo 2: what
    ``export_hf`` writes) runs on our ``OLMo`` by default, loaded from its safetensors without
    importing transformers (the same function, up to float rounding; much faster to start);
    ``implementation="transformers"``, or any other architecture, loads it with transformers'
    ``AutoModelForCausalLM``.

    A native checkpoint uses the ``tokenizer.json`` beside it if there is one, else OLMo's
    tokenizer. Nothing is downloaded: ``FOLDER`` must be local. A native checkpoint is verified
    against the sha256 record written with it (a missing record or a changed file is a
    ``CheckpointError`` naming the file); an ``hf:`` folder is not ours and has none, but a
    damaged safetensors file in it is named, and its weights load from safetensors only (a
    folder with only pickled ``*.bin`` weights is refused).
    """
    text = str(spec)
    if text.startswith(HF_PREFIX):
        folder = Path(text[len(HF_PREFIX) :]).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} is not a folder: 'hf:' models load from a local transformers folder "
                "(config.json, weights, tokenizer.json); nothing is downloaded"
            )
        return _load_hf(folder, device=device, dtype=dtype, implementation=implementation)
    return _load_native(Path(text).expanduser(), device=device, dtype=dtype)
