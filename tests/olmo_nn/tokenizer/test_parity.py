"""Our tokenizer gives exactly the ids of transformers' fast tokenizer (the `tokenizers` library)."""

from __future__ import annotations

import random
import unicodedata

import pytest
import tokenizers

from olmo_assets.curation.local_sources import (
    code_documents,
    markdown_documents,
    multilingual_documents,
    prose_documents,
)
from olmo_nn.tokenizer import Tokenizer
from olmo_nn.tokenizer.bpe import SEPARATOR


@pytest.fixture(scope="module")
def reference(olmo_tokenizer: Tokenizer) -> tokenizers.Tokenizer:
    return tokenizers.Tokenizer.from_str(olmo_tokenizer.json_text)


def _reference_ids(reference: tokenizers.Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]


def _assert_same(ours: list[list[int]], theirs: list[list[int]], texts: list[str]) -> None:
    for mine, expected, text in zip(ours, theirs, texts, strict=True):
        if mine != expected:
            at = next(
                (i for i, (a, b) in enumerate(zip(mine, expected, strict=False)) if a != b), None
            )
            pytest.fail(
                f"ids differ at token {at} of {text[:80]!r}: ours {mine[:20]} vs {expected[:20]}"
            )


def test_engine_is_fast(olmo_tokenizer: Tokenizer) -> None:
    assert olmo_tokenizer.engine == "tiktoken"
    assert olmo_tokenizer.vocab_size == 50280
    assert (olmo_tokenizer.eos_token_id, olmo_tokenizer.pad_token_id) == (50279, 1)


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(lambda: code_documents(max_bytes=3_000_000), id="code"),
        pytest.param(prose_documents, id="prose"),
        pytest.param(markdown_documents, id="markdown"),
        pytest.param(multilingual_documents, id="multilingual"),
    ],
)
def test_real_text_parity(
    source, olmo_tokenizer: Tokenizer, reference: tokenizers.Tokenizer
) -> None:  # type: ignore[no-untyped-def]
    texts = [doc["text"] for doc in source()]
    assert len(texts) >= 20
    expected = _reference_ids(reference, texts)
    _assert_same(olmo_tokenizer.encode_batch(texts), expected, texts)
    _assert_same([a.tolist() for a in olmo_tokenizer.encode_batch_arrays(texts)], expected, texts)
    # Decoding gives back the (NFC-normalized) text.
    for text, ids in zip(texts[:50], expected[:50], strict=False):
        assert olmo_tokenizer.decode(ids) == unicodedata.normalize("NFC", text)
        assert olmo_tokenizer.decode(ids) == reference.decode(ids, skip_special_tokens=False)


EDGE_CASES = [
    "",
    " ",
    "a  b",
    "x\n   y",
    "\n\n  \n  ",
    "tab\t\t  indented\n\t  mixed",
    " " * 24 + "24",
    " " * 25 + "25",
    " " * 49 + "x",
    " " * 60,
    "trailing   ",
    "contact me at |||EMAIL_ADDRESS||| or |||PHONE_NUMBER|||, host |||IP_ADDRESS|||.",
    "x.|||EMAIL_ADDRESS|||y",
    "end<|endoftext|>start<|padding|>",
    "<|endoftext|>\u0338 combining after a special token",
    "e\u0301t\u00e9 caf\u0065\u0301 (NFC composes these)",
    "don't we'll they've I'm she'd it's 'S",
    "emoji 👩‍👩‍👧 flags 🇫🇷 and zwj",
    "non-breaking\u00a0\u00a0spaces\u3000ideographic",
    "numbers 1234567890 ١٢٣ ½",
]


@pytest.mark.parametrize("text", EDGE_CASES)
def test_edge_cases(text: str, olmo_tokenizer: Tokenizer, reference: tokenizers.Tokenizer) -> None:
    assert olmo_tokenizer.encode(text) == reference.encode(text, add_special_tokens=False).ids


def test_random_mixtures(olmo_tokenizer: Tokenizer, reference: tokenizers.Tokenizer) -> None:
    """Fuzz the boundaries that matter: spaces, newlines, apostrophes, specials, non-ASCII."""
    pieces = [" ", "  ", "   ", "\n", "\t", "\r\n", "a", "The", "word", "'s", "'ll", "9", "42",
              ".", "!?", "é", "e\u0301", "日本", "ß", "—", "|||", "|||EMAIL_ADDRESS|||",
              "<|endoftext|>", "\u00a0", "🙂", "{", "}", "(", "def", "_", "#"]  # fmt: skip
    rng = random.Random(1234)
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 60))) for _ in range(3000)]
    expected = _reference_ids(reference, texts)
    _assert_same(olmo_tokenizer.encode_batch(texts), expected, texts)
    # The array path encodes short texts in joined groups: same ids, text by text.
    arrays = olmo_tokenizer.encode_batch_arrays(texts)
    _assert_same([a.tolist() for a in arrays], expected, texts)


def test_texts_containing_the_private_separator(
    olmo_tokenizer: Tokenizer, reference: tokenizers.Tokenizer
) -> None:
    texts = ["before", f"a{SEPARATOR}b", "after", SEPARATOR, ""]
    expected = _reference_ids(reference, texts)
    assert [a.tolist() for a in olmo_tokenizer.encode_batch_arrays(texts)] == expected
    assert olmo_tokenizer.encode_batch(texts) == expected


def test_decode_skips_special_tokens_on_request(olmo_tokenizer: Tokenizer) -> None:
    ids = [*olmo_tokenizer.encode("Hello"), 50279, 1, *olmo_tokenizer.encode(" world")]
    assert olmo_tokenizer.decode(ids) == "Hello<|endoftext|><|padding|> world"
    assert olmo_tokenizer.decode(ids, skip_special_tokens=True) == "Hello world"


def test_decode_replaces_split_characters(
    olmo_tokenizer: Tokenizer, reference: tokenizers.Tokenizer
) -> None:
    ids = olmo_tokenizer.encode("日本")
    partial = ids[:1] if len(ids) > 1 else ids
    assert olmo_tokenizer.decode(partial) == reference.decode(partial, skip_special_tokens=False)
    for bad in (50280, -1, 2**32 - 2, 2**40):  # 2**32 - 2 is the engine's private separator
        with pytest.raises(ValueError, match=f"token id {bad} is outside the vocabulary"):
            olmo_tokenizer.decode([5, bad])
    # Ids the engine never produces but the vocabulary has (BPE twins of the added space runs).
    assert olmo_tokenizer.decode([245, 50276]) == reference.decode([245, 50276]) == "    "
