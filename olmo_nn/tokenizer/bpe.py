"""Compile a Hugging Face byte-level BPE ``tokenizer.json`` into a tiktoken engine.

transformers' fast tokenizer and tiktoken implement the same byte-level BPE, but tiktoken's
Rust core is several times faster. The two agree exactly when:

* token ids are assigned in merge order (tiktoken merges the lowest *token id* first, Hugging
  Face the lowest *merge index*), and every merge-created token, looked up whole, is what
  Hugging Face's merges would produce from its characters (tiktoken looks pieces up whole);
* the pre-tokenizer is the GPT-2 regex (``ByteLevel(use_regex=True)``) or a ``Split`` regex
  followed by ``ByteLevel(use_regex=False)``, and the normalizer is absent or NFC;
* added tokens split the text first, leftmost-longest. Hugging Face matches added tokens
  before pre-tokenizing; tiktoken's special tokens do the same as long as none is a prefix of
  another. OLMo's tokenizer adds runs of 2-24 spaces, which are prefixes of each other: they
  are folded into the regex instead (a ``' {2,N}'`` alternative first, and whitespace runs that
  never swallow two consecutive spaces), which yields the same pieces.

:func:`compile_fast_bpe` checks every condition and returns ``None`` when one fails; the
caller then falls back to the ``tokenizers`` library. Parity on real text is a test.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

import tiktoken

__all__ = ["SEPARATOR", "FastBPE", "bytes_to_unicode", "compile_fast_bpe"]

#: A private special token used to encode many short texts in one engine call: special tokens
#: split the text before pre-tokenization, so ``a + SEPARATOR + b`` encodes exactly as ``a``
#: and ``b`` separately. Texts that contain it are encoded on their own, as plain text.
SEPARATOR = "\x00\x01<olmo-lab:separator>\x01\x00"
# The separator's id: far above any real vocabulary, only ever seen by the encoding engine.
_SEPARATOR_ID = 2**32 - 2
_NOT_IN_UTF8 = frozenset([0xC0, 0xC1, *range(0xF5, 0x100)])
#: sha256 digests (:func:`merges_digest`) of merge lists already known to pass
#: :func:`_merges_reach_whole_tokens`, which takes ~1.5 s of Python per 50k merges: checking
#: them again on every start would dominate a short ``olmo data tokenize``. Holds the shipped
#: OLMo tokenizer's; a test recomputes the check for every digest listed here.
CHECKED_MERGES = frozenset(
    {"0a3af9b853a6bd1ab9722e8d69424c25fd2a89af043f64270fac12491664ce1f"}  # OLMo (dolma v1.5)
)

#: GPT-2's pre-tokenization regex (``ByteLevel(use_regex=True)`` in Hugging Face).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_GPT2_WHITESPACE = r"\s+(?!\S)|\s+"
# Whitespace that is not the start of two consecutive spaces (those are added tokens).
_WHITESPACE_WITHOUT_DOUBLE_SPACE = r"(?:[^\S ]| (?! ))+(?!\S)|(?:[^\S ]| (?! ))+"


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters used in byte-level vocabs."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


@functools.cache
def _unicode_to_latin1() -> dict[int, str]:
    """``str.translate`` table: a byte-level character to the Latin-1 character of its byte;
    the Latin-1 characters that are not byte-level characters to one that Latin-1 lacks."""
    table = {ord(c): chr(b) for b, c in bytes_to_unicode().items()}
    for code in range(256):
        table.setdefault(code, "\uffff")
    return table


def token_bytes(token: str) -> bytes | None:
    """The bytes a byte-level vocabulary entry stands for (None if it is not byte-level)."""
    try:
        return token.translate(_unicode_to_latin1()).encode("latin-1")
    except UnicodeEncodeError:  # a character outside the byte-level alphabet
        return None


@dataclass(frozen=True)
class FastBPE:
    """What a tiktoken engine needs to give the Hugging Face token ids (build with new_encoding)."""

    normalize_nfc: bool
    special_tokens: dict[str, int]
    pattern: str
    ranks: dict[bytes, int]
    separator_id: int = _SEPARATOR_ID
    """Id of :data:`SEPARATOR`, a private special token past the vocabulary's end."""

    @property
    def allowed_special(self) -> set[str]:
        """The tokenizer's own special tokens (matched in text, as Hugging Face does)."""
        return set(self.special_tokens)

    def new_encoding(self, *, with_separator: bool = True) -> tiktoken.Encoding:
        """An independent copy of the engine (~20 ms), e.g. one per thread.

        Decoding uses one built ``with_separator=False``: it then knows exactly the ids the
        tokenizer can produce, and refuses anything else.
        """
        specials = dict(self.special_tokens)
        if with_separator:
            specials[SEPARATOR] = self.separator_id
        return _build_encoding(self.pattern, self.ranks, specials)


def _build_encoding(
    pattern: str, ranks: dict[bytes, int], specials: dict[str, int]
) -> tiktoken.Encoding:
    return tiktoken.Encoding(
        name="hf-bpe", pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials
    )


def _pattern_of(pre_tokenizer: dict[str, Any] | None) -> str | None:
    if pre_tokenizer is None:
        return None
    kind = pre_tokenizer.get("type")
    if kind == "ByteLevel":
        if pre_tokenizer.get("add_prefix_space") or not pre_tokenizer.get("use_regex", True):
            return None
        return GPT2_PATTERN
    if kind == "Sequence":
        steps = pre_tokenizer.get("pretokenizers", [])
        if len(steps) != 2:
            return None
        split, byte_level = steps
        if (
            split.get("type") != "Split"
            or split.get("behavior") != "Isolated"
            or split.get("invert")
            or "Regex" not in split.get("pattern", {})
            or byte_level.get("type") != "ByteLevel"
            or byte_level.get("use_regex", True)
            or byte_level.get("add_prefix_space")
        ):
            return None
        return str(split["pattern"]["Regex"])
    return None


def _normalizes_nfc(normalizer: dict[str, Any] | None) -> bool | None:
    """True for NFC, False for none, None for anything we do not reproduce."""
    if normalizer is None:
        return False
    if normalizer.get("type") == "NFC":
        return True
    if normalizer.get("type") == "Sequence":
        steps = normalizer.get("normalizers", [])
        if not steps:
            return False
        if len(steps) == 1:
            return _normalizes_nfc(steps[0])
    return None


def _merge_pairs(model: dict[str, Any]) -> list[tuple[str, str]]:
    pairs = []
    for merge in model["merges"]:
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        pairs.append((left, right))
    return pairs


def merges_digest(pairs: list[tuple[str, str]]) -> str:
    """sha256 of a merge list, the key of :data:`CHECKED_MERGES`."""
    return hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode("utf-8")).hexdigest()


def _merges_reach_whole_tokens(pairs: list[tuple[str, str]]) -> bool:
    """Does applying the merges to each merge-created token's characters give that token?

    tiktoken looks a pre-token up whole before running BPE; Hugging Face always runs the
    merges. They agree on whole-token pieces exactly when this holds.
    """
    rank = {pair: i for i, pair in enumerate(pairs)}
    for left, right in pairs:
        parts = list(left + right)
        while len(parts) > 1:
            best, best_at = len(rank), -1
            for i in range(len(parts) - 1):
                r = rank.get((parts[i], parts[i + 1]), best)
                if r < best:
                    best, best_at = r, i
            if best_at < 0:
                break
            parts[best_at : best_at + 2] = [parts[best_at] + parts[best_at + 1]]
        if parts != [left + right]:
            return False
    return True


def _space_run_lengths(contents: list[str]) -> list[int]:
    return sorted(len(c) for c in contents if c and set(c) == {" "})


def compile_fast_bpe(spec: dict[str, Any]) -> FastBPE | None:
    """Build the tiktoken engine for a parsed ``tokenizer.json``, or None if unsupported."""
    model = spec.get("model") or {}
    if (
        model.get("type") != "BPE"
        or model.get("dropout")
        or model.get("continuing_subword_prefix")
        or model.get("end_of_word_suffix")
        or model.get("byte_fallback")
        or model.get("ignore_merges")
    ):
        return None
    pattern = _pattern_of(spec.get("pre_tokenizer"))
    nfc = _normalizes_nfc(spec.get("normalizer"))
    if pattern is None or nfc is None:
        return None

    vocab: dict[str, int] = model["vocab"]
    pairs = _merge_pairs(model)
    ranks: dict[bytes, int] = {}
    for token, token_id in vocab.items():
        raw = token_bytes(token)
        if raw is not None and len(raw) == 1:
            ranks[raw] = token_id
    previous_id = -1
    for left, right in pairs:
        merged_id = vocab.get(left + right)
        raw = token_bytes(left + right)
        if merged_id is None or raw is None or merged_id <= previous_id or raw in ranks:
            return None  # ids not in merge order, or a token made twice: ranks would differ
        ranks[raw] = merged_id
        previous_id = merged_id
    if merges_digest(pairs) not in CHECKED_MERGES and not _merges_reach_whole_tokens(pairs):
        return None
    # Every byte that can occur in UTF-8 needs a token; the 13 that cannot (0xC0, 0xC1,
    # 0xF5-0xFF) may be missing (OLMo's vocabulary lacks them): text never contains them.
    if any(bytes([b]) not in ranks for b in range(256) if b not in _NOT_IN_UTF8):
        return None
    largest = max(max(vocab.values()), *(t["id"] for t in spec.get("added_tokens", [])))
    if largest >= _SEPARATOR_ID:
        return None

    added = spec.get("added_tokens", [])
    space_runs = {t["content"]: t["id"] for t in added if set(t["content"]) == {" "}}
    specials = {t["content"]: t["id"] for t in added if t["content"] not in space_runs}
    if any(t.get("lstrip") or t.get("rstrip") or t.get("single_word") for t in added):
        return None
    names = sorted(specials)
    if any(b.startswith(a) for a, b in itertools.pairwise(names)):
        return None  # tiktoken's special-token match is leftmost-first, not leftmost-longest
    if space_runs:
        lengths = _space_run_lengths(list(space_runs))
        if lengths != list(range(2, lengths[-1] + 1)) or not pattern.endswith(_GPT2_WHITESPACE):
            return None
        pattern = (
            f" {{2,{lengths[-1]}}}|"
            + pattern[: -len(_GPT2_WHITESPACE)]
            + _WHITESPACE_WITHOUT_DOUBLE_SPACE
        )
        # A run of spaces is always its own piece, looked up whole: map it to the added id.
        for content, token_id in space_runs.items():
            ranks[content.encode()] = token_id
    fast = FastBPE(
        normalize_nfc=nfc,
        special_tokens=specials,
        pattern=pattern,
        ranks=ranks,
    )
    try:
        fast.new_encoding()  # the pattern compiles and the ranks are consistent
    except ValueError:
        return None
    return fast
