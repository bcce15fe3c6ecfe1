"""Paloma-style perplexity: disjoint windows, bits per byte, macro vs micro averaging."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from olmo_nn.eval.models import LanguageModel
from olmo_nn.eval.perplexity import (
    ALL_SOURCES,
    DocumentScore,
    aggregate_perplexity,
    evaluate_perplexity,
    score_documents,
)
from olmo_nn.model import OLMo, TransformerConfig
from olmo_nn.tokenizer import Tokenizer

WINDOW = 8
VOCAB = 50304
LONG_TEXT = "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun."


class Uniform(torch.nn.Module):
    """Zero logits over the whole vocabulary (-log p = ln V per token); records its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.inputs: list[list[int]] = []

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.inputs.extend(ids.tolist())
        return torch.zeros(*ids.shape, VOCAB)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_name_or_path()


def test_olmo_tokenizer_has_no_bos_so_documents_start_with_eos(tokenizer: Tokenizer) -> None:
    assert tokenizer.bos_token_id is None
    module = Uniform()
    model = LanguageModel(module, tokenizer, name="u", max_length=WINDOW, vocab_size=VOCAB)
    score_documents(model, [{"id": "d", "text": "Hi there", "source": "s"}])
    assert module.inputs[0][0] == tokenizer.eos_token_id


def test_disjoint_windows_predict_each_token_once(tokenizer: Tokenizer) -> None:
    tokens = tokenizer.encode(LONG_TEXT)
    assert len(tokens) > 2 * WINDOW
    module = Uniform()
    model = LanguageModel(module, tokenizer, name="u", max_length=WINDOW, vocab_size=VOCAB)
    (score,) = score_documents(model, [{"id": "d", "text": LONG_TEXT, "source": "s"}], batch_size=1)
    assert score.num_tokens == len(tokens)
    assert score.nll == pytest.approx(len(tokens) * math.log(VOCAB), rel=1e-6)
    assert score.num_bytes == len(LONG_TEXT.encode("utf-8"))
    # Full windows first (longest first, stable), then the remainder: inputs tile the
    # document without overlap, and no window exceeds the model's length.
    assert all(len(ids) <= WINDOW for ids in module.inputs)
    assert [t for ids in module.inputs for t in ids] == [tokenizer.eos_token_id, *tokens[:-1]]


def test_windows_match_a_manual_forward(tokenizer: Tokenizer) -> None:
    config = TransformerConfig(d_model=32, n_heads=4, n_layers=2, max_sequence_length=WINDOW)
    module = OLMo(config)
    module.init_weights(seed=0)
    module.eval()
    model = LanguageModel(module, tokenizer, name="n", max_length=WINDOW, vocab_size=VOCAB)
    documents = [
        {"id": "long", "text": LONG_TEXT, "source": "s"},
        {"id": "short", "text": "Short one.", "source": "s"},
    ]
    scores = score_documents(model, documents, batch_size=3)
    for document, score in zip(documents, scores, strict=True):
        ids = [tokenizer.eos_token_id, *tokenizer.encode(document["text"])]
        expected = 0.0
        for start in range(0, len(ids) - 1, WINDOW):
            chunk = torch.tensor([ids[start : start + WINDOW + 1]])
            with torch.no_grad():
                logprobs = torch.log_softmax(module(chunk[:, :-1])[0].double(), dim=-1)
            targets = chunk[0, 1:]
            expected -= float(logprobs[torch.arange(len(targets)), targets].sum())
        assert score.nll == pytest.approx(expected, abs=1e-4)


def test_bits_per_byte_of_a_uniform_model(tokenizer: Tokenizer) -> None:
    text = "hello world"
    num_tokens = len(tokenizer.encode(text))
    model = LanguageModel(Uniform(), tokenizer, name="u", max_length=WINDOW, vocab_size=VOCAB)
    rows = evaluate_perplexity(model, [{"id": "d", "text": text, "source": "s", "metadata": {}}])
    values = {(r["source"], r["domain"], r["metric"]): r["value"] for r in rows}
    # nll = num_tokens * ln V over 11 bytes; perplexity of a uniform model is V itself.
    bpb = num_tokens * math.log(VOCAB) / (11 * math.log(2))
    assert values["s", None, "bits_per_byte"] == pytest.approx(bpb)
    assert values["s", None, "perplexity"] == pytest.approx(VOCAB)
    assert values[ALL_SOURCES, None, "bits_per_byte"] == pytest.approx(bpb)
    assert ("s", None, "perplexity_macro") not in values  # no domains: no macro average


def test_macro_and_micro_averages() -> None:
    scores = [
        DocumentScore(id="1", source="s", domain="a", nll=2.0, num_tokens=1, num_bytes=2),
        DocumentScore(id="2", source="s", domain="b", nll=3.0, num_tokens=3, num_bytes=6),
        DocumentScore(id="3", source="s", domain="b", nll=1.0, num_tokens=1, num_bytes=2),
        DocumentScore(id="4", source="t", domain=None, nll=4.0, num_tokens=2, num_bytes=4),
    ]
    rows = aggregate_perplexity(scores)
    values = {(r["source"], r["domain"], r["metric"]): r["value"] for r in rows}
    counts = {(r["source"], r["domain"], r["metric"]): r["count"] for r in rows}
    ln2 = math.log(2)
    # Domain a: e^(2/1), 2/(2 ln 2); domain b: e^(4/4), 4/(8 ln 2).
    assert values["s", "a", "perplexity"] == pytest.approx(math.e**2)
    assert values["s", "b", "perplexity"] == pytest.approx(math.e)
    assert values["s", "a", "bits_per_byte"] == pytest.approx(1.0 / ln2)
    assert values["s", "b", "bits_per_byte"] == pytest.approx(0.5 / ln2)
    assert values["s", None, "perplexity_macro"] == pytest.approx((math.e**2 + math.e) / 2)
    assert values["s", None, "bits_per_byte_macro"] == pytest.approx(0.75 / ln2)
    # Micro pools the source's documents: 6 nats over 5 tokens and 10 bytes.
    assert values["s", None, "perplexity"] == pytest.approx(math.exp(6 / 5))
    assert values["s", None, "bits_per_byte"] == pytest.approx(0.6 / ln2)
    assert counts["s", "b", "perplexity"] == 2
    assert counts["s", None, "perplexity"] == 3
    # A source without domains has only micro rows; "all" pools every document.
    assert values["t", None, "perplexity"] == pytest.approx(math.e**2)
    assert ("t", None, "perplexity_macro") not in values
    assert values[ALL_SOURCES, None, "perplexity"] == pytest.approx(math.exp(10 / 7))
    assert values[ALL_SOURCES, None, "bits_per_byte"] == pytest.approx(10 / (14 * ln2))
    assert counts[ALL_SOURCES, None, "perplexity"] == 4


def test_domain_read_from_metadata(tokenizer: Tokenizer) -> None:
    model = LanguageModel(Uniform(), tokenizer, name="u", max_length=WINDOW, vocab_size=VOCAB)
    documents: list[dict[str, Any]] = [
        {"id": "1", "text": "one", "source": "s", "metadata": {"domain": "x"}},
        {"id": "2", "text": "two", "source": "s", "metadata": {"subdomain": "y"}},
        {"id": "3", "text": "three", "source": "s"},
    ]
    assert [s.domain for s in score_documents(model, documents)] == ["x", "y", None]
