"""The lab's tokenizer: OLMo's by default, any Hugging Face ``tokenizer.json`` by path.

Byte-level BPE tokenizers (OLMo's, GPT-2's, Pythia's, Llama 3's) run on a tiktoken engine
compiled from the JSON (see :mod:`olmo_nn.tokenizer.bpe`), which gives the ids that
transformers' fast tokenizer gives, several times faster; anything else runs on the
``tokenizers`` library itself. Encoding never adds BOS/EOS: callers append EOS where a
format wants it (token shards do).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import numpy as np
import tiktoken
import tokenizers

from olmo_nn.tokenizer.bpe import SEPARATOR, FastBPE, compile_fast_bpe, token_bytes

__all__ = ["DEFAULT_TOKENIZER", "Tokenizer"]

#: The tokenizer OLMo 1 was trained with (GPT-NeoX-20B BPE plus PII tokens), shipped here.
DEFAULT_TOKENIZER = "allenai/gpt-neox-olmo-dolma-v1_5"
_DATA = Path(__file__).parent / "data"
_SHIPPED = {
    DEFAULT_TOKENIZER: _DATA / "allenai_gpt-neox-olmo-dolma-v1_5.json",
    "gpt-neox-olmo-dolma-v1_5": _DATA / "allenai_gpt-neox-olmo-dolma-v1_5.json",
    "olmo": _DATA / "allenai_gpt-neox-olmo-dolma-v1_5.json",
}
# OLMo's tokenizer JSON does not say which token ends a document; OLMo's configs do.
_KNOWN_IDS = {DEFAULT_TOKENIZER: {"eos": 50279, "pad": 1}}
_EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|im_end|>")
_PAD_CANDIDATES = ("<|padding|>", "<pad>", "<|pad|>")
_BOS_CANDIDATES = ("<s>", "<|begin_of_text|>", "<bos>")
_EXPECTED = "expected a Hugging Face tokenizer.json"
# Below this many characters a batch is encoded on the calling thread.
_MIN_PARALLEL_CHARS = 1 << 16
# Texts shorter than this are encoded in groups of about this many characters per call.
_JOIN_BELOW_CHARS = 1 << 14


def _resolve(name_or_path: str | os.PathLike[str]) -> tuple[str, Path]:
    text = str(name_or_path)
    if text in _SHIPPED:
        path = _SHIPPED[text]
        if not path.is_file():
            raise FileNotFoundError(
                f"the shipped tokenizer file {path} is missing from this installation; "
                "reinstall the package (`make install`) or pass a tokenizer.json by path"
            )
        return DEFAULT_TOKENIZER if text != "gpt-neox-olmo-dolma-v1_5" else text, path
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.is_file():
        return text, path
    shipped = ", ".join(sorted(_SHIPPED))
    raise FileNotFoundError(
        f"tokenizer {text!r} is neither a tokenizer.json file, a folder holding one, nor a "
        f"shipped tokenizer ({shipped}). Nothing is downloaded at run time: on a machine with "
        'network access run `python -c "import tokenizers; '
        f"tokenizers.Tokenizer.from_pretrained('{text}').save('tokenizer.json')\"` "
        "and pass the saved file's path."
    )


def _read_spec(path: Path) -> tuple[str, dict[str, Any]]:
    """A tokenizer file's text and JSON; ``ValueError`` naming the file when it is not one."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        byte = f"byte 0x{raw[error.start]:02x} at offset {error.start}"
        raise ValueError(f"tokenizer file {path}: not UTF-8 text ({byte}); {_EXPECTED}") from None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        where = f"{error.msg}: line {error.lineno} column {error.colno}"
        raise ValueError(f"tokenizer file {path}: not JSON ({where}); {_EXPECTED}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
        raise ValueError(
            f'tokenizer file {path}: JSON, but not a tokenizer (no "model" section); {_EXPECTED}'
        )
    return text, spec


def _token_id(spec: dict[str, Any], candidates: Iterable[str]) -> int | None:
    added = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
    vocab = spec.get("model", {}).get("vocab", {})
    for name in candidates:
        if name in added:
            return int(added[name])
        if isinstance(vocab, dict) and name in vocab:
            return int(vocab[name])
    return None


def _config_token(folder: Path, key: str, spec: dict[str, Any]) -> int | None:
    """eos/pad/bos from a transformers ``tokenizer_config.json`` beside the JSON, if any."""
    config_path = folder / "tokenizer_config.json"
    if not config_path.is_file():
        return None
    value = json.loads(config_path.read_text(encoding="utf-8")).get(key)
    if isinstance(value, dict):
        value = value.get("content")
    return _token_id(spec, [value]) if isinstance(value, str) else None


def _invalid_text(error: UnicodeEncodeError) -> ValueError:
    return ValueError(
        f"text holds a lone surrogate {error.object[error.start]!r} at character {error.start}: "
        "not valid Unicode, so it has no UTF-8 bytes to tokenize (transformers' tokenizer "
        "refuses it too); repair or drop the text, e.g. "
        "text.encode('utf-8', 'replace').decode('utf-8')"
    )


class Tokenizer:
    """Encode text to token ids and back.

    Build one with :meth:`from_name_or_path`; ``encode_batch_arrays`` is the data pipeline's
    hot path (uint32 arrays, all cores, no per-token Python objects).
    """

    def __init__(
        self,
        spec_json: str,
        *,
        name: str,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        bos_token_id: int | None = None,
        engine: str = "auto",
        num_threads: int | None = None,
        _spec: dict[str, Any] | None = None,
    ) -> None:
        if engine not in ("auto", "tiktoken", "tokenizers"):
            raise ValueError(f"engine={engine!r}: expected 'auto', 'tiktoken' or 'tokenizers'")
        self.name = name
        self.json_text = spec_json
        spec = _spec if _spec is not None else json.loads(spec_json)
        self._spec = spec
        self._fast: FastBPE | None = None
        if engine != "tokenizers":
            self._fast = compile_fast_bpe(spec)
            if self._fast is None and engine == "tiktoken":
                raise ValueError(
                    f"tokenizer {name!r} cannot run on the tiktoken engine (not a byte-level "
                    "BPE in merge order); use engine='auto' or 'tokenizers'"
                )
        # The tokenizers library's copy (~0.2 s to build) is only needed where the tiktoken
        # engine cannot run: build it now then (it validates the file), else on first use.
        self._hf_tokenizer: tokenizers.Tokenizer | None = None
        if self._fast is None:
            self._hf_tokenizer = self._hf
        # One engine per thread: threads sharing one tiktoken engine share its regex caches
        # and scale poorly (measured on two cores: 22 MB/s shared vs 35 MB/s separate).
        self._thread_engines = threading.local()
        self._allowed = self._fast.allowed_special if self._fast is not None else set()
        self._decoder = (
            self._fast.new_encoding(with_separator=False) if self._fast is not None else None
        )
        known = _KNOWN_IDS.get(name, {})
        self.eos_token_id = eos_token_id if eos_token_id is not None else known.get("eos")
        if self.eos_token_id is None:
            self.eos_token_id = _token_id(spec, _EOS_CANDIDATES)
        self.pad_token_id = pad_token_id if pad_token_id is not None else known.get("pad")
        if self.pad_token_id is None:
            self.pad_token_id = _token_id(spec, _PAD_CANDIDATES)
        self.bos_token_id = bos_token_id if bos_token_id is not None else known.get("bos")
        if self.bos_token_id is None and "bos" not in known:
            self.bos_token_id = _token_id(spec, _BOS_CANDIDATES)
        self.num_threads = num_threads or os.cpu_count() or 1
        self._pool: ThreadPoolExecutor | None = None
        added = spec.get("added_tokens", [])
        self._special_ids = frozenset(int(t["id"]) for t in added if t.get("special"))
        raw_specials = [t["content"] for t in added if not t.get("normalized", True)]
        self._raw_special_re = (
            re.compile(
                "(" + "|".join(re.escape(s) for s in sorted(raw_specials, key=len)[::-1]) + ")"
            )
            if raw_specials
            else None
        )

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_name_or_path(
        cls,
        name_or_path: str | os.PathLike[str] | None = None,
        *,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        engine: str = "auto",
    ) -> Tokenizer:
        """OLMo's tokenizer by default; a shipped name, a ``tokenizer.json`` or its folder."""
        name, path = _resolve(name_or_path if name_or_path is not None else DEFAULT_TOKENIZER)
        spec_json, spec = _read_spec(path)
        if eos_token_id is None:
            eos_token_id = _config_token(path.parent, "eos_token", spec)
        if pad_token_id is None:
            pad_token_id = _config_token(path.parent, "pad_token", spec)
        bos = _config_token(path.parent, "bos_token", spec)
        return cls(
            spec_json,
            name=name,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            bos_token_id=bos,
            engine=engine,
            _spec=spec,
        )

    # ----------------------------------------------------------------- properties
    @property
    def engine(self) -> str:
        """``"tiktoken"`` (compiled byte-level BPE) or ``"tokenizers"`` (the HF library)."""
        return "tiktoken" if self._fast is not None else "tokenizers"

    @property
    def _hf(self) -> tokenizers.Tokenizer:
        """The ``tokenizers`` library's tokenizer for this file (built on first use)."""
        if self._hf_tokenizer is None:
            try:
                self._hf_tokenizer = tokenizers.Tokenizer.from_str(self.json_text)
            except Exception as error:  # the library raises a bare Exception
                raise ValueError(
                    f"tokenizer {self.name}: the tokenizers library cannot read it ({error}); "
                    f"{_EXPECTED}"
                ) from None
        return self._hf_tokenizer

    @cached_property
    def vocab_size(self) -> int:
        """Number of token ids (largest id + 1), added tokens included."""
        if self._fast is not None:
            # What tokenizers' get_vocab_size(with_added_tokens=True) counts: the distinct
            # token strings of the vocabulary and the added tokens.
            added = {t["content"]: t["id"] for t in self._spec.get("added_tokens", [])}
            return len({**self._spec["model"]["vocab"], **added})
        return int(self._hf.get_vocab_size(with_added_tokens=True))

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the tokenizer JSON: token shards record it so mismatches are caught."""
        return hashlib.sha256(self.json_text.encode("utf-8")).hexdigest()

    @cached_property
    def _id_to_bytes(self) -> list[bytes]:
        table = [b""] * self.vocab_size
        for token, token_id in self._hf.get_vocab(with_added_tokens=False).items():
            raw = token_bytes(token)
            table[token_id] = raw if raw is not None else token.encode("utf-8")
        for added in self._spec.get("added_tokens", []):
            table[added["id"]] = added["content"].encode("utf-8")
        return table

    # ----------------------------------------------------------------- encoding
    def _encoding(self) -> tiktoken.Encoding:
        """This thread's tiktoken engine (created on a thread's first call)."""
        assert self._fast is not None
        encoding = getattr(self._thread_engines, "encoding", None)
        if encoding is None:
            encoding = self._thread_engines.encoding = self._fast.new_encoding()
        return encoding

    def _encode_one(self, text: str) -> list[int]:
        fast = self._fast
        assert fast is not None
        if fast.normalize_nfc and not unicodedata.is_normalized("NFC", text):
            return self._encode_unnormalized(text)
        return self._encode_one_array(text).tolist()

    def _encode_unnormalized(self, text: str) -> list[int]:
        # Hugging Face splits on non-normalized special tokens *before* normalizing.
        assert self._fast is not None
        encoding = self._encoding()
        allowed = self._allowed
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise _invalid_text(error) from None
        if self._raw_special_re is None:
            return encoding.encode(
                unicodedata.normalize("NFC", text), allowed_special=allowed, disallowed_special=()
            )
        ids: list[int] = []
        specials = self._fast.special_tokens
        for i, part in enumerate(self._raw_special_re.split(text)):
            if i % 2:
                ids.append(specials[part])
            elif part:
                ids.extend(
                    encoding.encode(unicodedata.normalize("NFC", part), allowed_special="all")
                )
        return ids

    def _encode_chunk(self, texts: Sequence[str]) -> list[list[int]]:
        return [self._encode_one(t) for t in texts]

    def _map_parallel(self, texts: Sequence[str], fn: Any) -> list[Any]:
        total = sum(map(len, texts))
        if self.num_threads <= 1 or len(texts) < 2 or total < _MIN_PARALLEL_CHARS:
            return list(fn(texts))
        return self._map_chunks(texts, fn)

    def _map_chunks(self, items: Sequence[Any], fn: Any) -> list[Any]:
        """``fn`` over contiguous chunks of ``items`` on the thread pool, results in order."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="tokenize")
        # Many small chunks balance the threads (documents vary in size) at little overhead.
        num_chunks = min(len(items), self.num_threads * 16)
        bounds = np.linspace(0, len(items), num_chunks + 1).astype(int)
        chunks = [items[a:b] for a, b in itertools.pairwise(bounds) if b > a]
        out: list[Any] = []
        for part in self._pool.map(fn, chunks):
            out.extend(part)
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of one text (no BOS/EOS added)."""
        if self._fast is not None:
            return self._encode_one(text)
        return list(self._hf.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of many texts, on all cores."""
        if self._fast is not None:
            return self._map_parallel(texts, self._encode_chunk)
        return [list(e.ids) for e in self._hf.encode_batch(list(texts), add_special_tokens=False)]

    def encode_batch_arrays(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of many texts as uint32 arrays (the data pipeline's hot path)."""
        if self._fast is None:
            return [np.asarray(ids, dtype=np.uint32) for ids in self.encode_batch(texts)]

        return self._map_parallel(texts, self._encode_arrays_joined)

    def _encode_one_array(self, text: str) -> np.ndarray:
        fast = self._fast
        assert fast is not None
        if fast.normalize_nfc and not unicodedata.is_normalized("NFC", text):
            return np.asarray(self._encode_unnormalized(text), dtype=np.uint32)
        try:
            return self._encoding().encode_to_numpy(
                text, allowed_special=self._allowed, disallowed_special=()
            )
        except UnicodeEncodeError as error:
            raise _invalid_text(error) from None

    def _encode_arrays_joined(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Encode short texts a group per engine call, joined by the private separator.

        One call per group instead of per text keeps the GIL released for longer, which is
        what lets threads scale on short documents. Special tokens split the text before
        pre-tokenization, so each text gets exactly the ids it would get alone.
        """
        fast = self._fast
        assert fast is not None
        out: list[np.ndarray | None] = [None] * len(texts)
        group: list[int] = []
        group_chars = 0

        def flush() -> None:
            joined = SEPARATOR.join(texts[i] for i in group)
            try:
                ids = self._encoding().encode_to_numpy(joined, allowed_special="all")
            except UnicodeEncodeError:
                for i in group:  # find and name the offending text
                    out[i] = self._encode_one_array(texts[i])
                group.clear()
                return
            cuts = np.flatnonzero(ids == fast.separator_id)
            pieces = np.split(ids, cuts)
            out[group[0]] = pieces[0]
            for i, piece in zip(group[1:], pieces[1:], strict=True):
                out[i] = piece[1:]
            group.clear()

        for i, text in enumerate(texts):
            alone = (
                len(text) >= _JOIN_BELOW_CHARS
                or SEPARATOR in text
                or (fast.normalize_nfc and not unicodedata.is_normalized("NFC", text))
            )
            if alone:
                out[i] = self._encode_one_array(text)
                continue
            group.append(i)
            group_chars += len(text)
            if group_chars >= _JOIN_BELOW_CHARS:
                flush()
                group_chars = 0
        if group:
            flush()
        return cast("list[np.ndarray]", out)

    # ----------------------------------------------------------------- decoding
    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = False) -> str:
        """Text of token ids; invalid UTF-8 (a split character) becomes U+FFFD."""
        if isinstance(ids, list):
            token_ids = ids
        else:
            token_ids = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        if skip_special_tokens:
            special = self._special_ids
            token_ids = [i for i in token_ids if i not in special]
        if self._decoder is not None:
            try:
                # The decoding engine knows exactly the ids the tokenizer produces; others
                # (negative or past the vocabulary, the BPE twins of OLMo's added space runs)
                # raise and are decoded, or refused, from the table below.
                return self._decoder.decode_bytes(token_ids).decode("utf-8", errors="replace")
            except (KeyError, OverflowError):
                pass
        table = self._id_to_bytes
        bad = next((i for i in token_ids if not 0 <= i < len(table)), None)
        if bad is not None:
            raise ValueError(f"token id {bad} is outside the vocabulary (0..{len(table) - 1})")
        return b"".join(table[i] for i in token_ids).decode("utf-8", errors="replace")

    def decode_batch(
        self, batch: Iterable[Iterable[int]], *, skip_special_tokens: bool = False
    ) -> list[str]:
        """Texts of many id sequences, on all cores."""
        sequences = list(batch)

        def chunk(part: Sequence[Iterable[int]]) -> list[str]:
            return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in part]

        if len(sequences) < 2 or self.num_threads <= 1:
            return chunk(sequences)
        return self._map_chunks(sequences, chunk)

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``tokenizer.json`` into a folder (for Hugging Face exports); returns its path."""
        path = Path(folder) / "tokenizer.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.json_text, encoding="utf-8")
        return path

    def __repr__(self) -> str:
        return (
            f"Tokenizer(name={self.name!r}, vocab_size={self.vocab_size}, "
            f"eos_token_id={self.eos_token_id}, engine={self.engine!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for process pools: rebuild engines on the other side.
        return {
            "spec_json": self.json_text,
            "name": self.name,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "bos_token_id": self.bos_token_id,
            "engine": self.engine,
            "num_threads": self.num_threads,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        spec_json = state.pop("spec_json")
        self.__init__(spec_json, **state)  # type: ignore[misc]
