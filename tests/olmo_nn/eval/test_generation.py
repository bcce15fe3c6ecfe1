"""Greedy generation: our KV-cache decoding against full forwards and against transformers'
``generate``, for our ``OLMo`` and for an ``hf:`` model run by transformers.

A small random OLMo (OLMo's tokenizer, 50,304 output rows) is exported for transformers. The
reference is ``OlmoForCausalLM.generate`` (greedy, one prompt at a time, so no padding), the
same ``max_new_tokens``, the rows past the tokenizer's 50,280 ids suppressed (our argmax runs
over the tokenizer's ids), then the stop rules applied to its tokens: up to EOS, then up to the
first token whose text completes a stop string, the text cut before it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from olmo_nn.checkpoint import save_checkpoint
from olmo_nn.eval.generation import GenerationRequest, cut_at_stops, generate
from olmo_nn.eval.models import LanguageModel, load_language_model
from olmo_nn.hf import export_hf
from olmo_nn.model import KVCache, OLMo, TransformerConfig

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_name, "1")  # nothing here may reach the hub

CONFIG = TransformerConfig(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=128)
PROMPTS = [
    "Question: who wrote the novel war and peace\nAnswer:",
    "The capital of France is",
    "Hi",
    "Question: what is 2 + 2?\nAnswer: 4\n\nQuestion: what is 3 + 5?\nAnswer:",
]
MAX_NEW = 12


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("generation")
    model = OLMo(CONFIG)
    model.init_weights(seed=0)
    return export_hf(save_checkpoint(model, root / "checkpoint"), root / "hf", dtype="float32")


@pytest.fixture(scope="module")
def ours(folder: Path) -> LanguageModel:
    model = load_language_model(f"hf:{folder}", dtype=torch.float32)
    assert isinstance(model.module, OLMo)
    return model


@pytest.fixture(scope="module")
def theirs(folder: Path) -> LanguageModel:
    model = load_language_model(f"hf:{folder}", dtype=torch.float32, implementation="transformers")
    assert type(model.module).__name__ == "OlmoForCausalLM"
    return model


def _hf_generate(module: Any, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    ids = torch.tensor([prompt_ids])
    out = module.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        suppress_tokens=list(range(50280, 50304)),
        eos_token_id=None,
        pad_token_id=1,
    )
    return out[0, ids.shape[1] :].tolist()


def _apply_rules(
    tokenizer: Any, tokens: list[int], until: tuple[str, ...], eos: int | None
) -> tuple[list[int], str]:
    kept: list[int] = []
    for token in tokens:
        if token == eos:
            break
        kept.append(token)
        if any(stop in tokenizer.decode(kept) for stop in until):
            break
    return kept, cut_at_stops(tokenizer.decode(kept), until)


@pytest.fixture(scope="module")
def reference(theirs: LanguageModel) -> list[list[int]]:
    """transformers' ``generate``: MAX_NEW tokens for each prompt, alone."""
    return [
        _hf_generate(theirs.module, theirs.tokenizer.encode(prompt), MAX_NEW) for prompt in PROMPTS
    ]


OLMO2 = TransformerConfig(
    d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=128, norm_type="rmsnorm",
    norm_affine=True, qk_norm=True, norm_placement="post", clip_qkv=8.0,
)  # fmt: skip


@pytest.mark.parametrize("config", [CONFIG, OLMO2], ids=["olmo1", "olmo2"])
def test_kv_cache_forward_equals_full_forward(config: TransformerConfig) -> None:
    module = OLMo(config)
    module.init_weights(seed=1)
    module.eval()
    ids = torch.randint(0, 50000, (2, 14), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = module(ids)
        cache = KVCache(config.n_layers, 16)
        # 8 tokens, then 4 at once (a mask after cached ones), then one at a time.
        parts = [module(ids[:, :8], kv_cache=cache), module(ids[:, 8:12], kv_cache=cache)]
        parts += [module(ids[:, t : t + 1], kv_cache=cache) for t in (12, 13)]
    assert cache.length == 14
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="at most 16 tokens"):
        module(ids[:, :3], kv_cache=cache)


def test_kv_cache_decoding_equals_full_forward_decoding(ours: LanguageModel) -> None:
    """Padded, batched decoding with the cache gives the tokens of a full forward per step on
    each prompt alone, and its logits agree within fp32 noise."""
    outputs = generate(
        ours, [GenerationRequest(p, max_new_tokens=MAX_NEW) for p in PROMPTS], batch_size=4
    )
    module = ours.module
    for prompt, output in zip(PROMPTS, outputs, strict=True):
        ids = ours.tokenizer.encode(prompt)
        expected: list[int] = []
        with torch.no_grad():
            for _ in range(MAX_NEW):
                logits = module(torch.tensor([ids + expected]))[0, -1, :50280]
                expected.append(int(logits.argmax()))
        assert output.token_ids == expected
        assert output.stop_reason == "length" and output.num_prompt_tokens == len(ids)


@pytest.mark.parametrize("which", ["ours", "hf"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_generations_equal_transformers_generate(
    which: str,
    batch_size: int,
    ours: LanguageModel,
    theirs: LanguageModel,
    reference: list[list[int]],
) -> None:
    model = ours if which == "ours" else theirs
    outputs = generate(
        model,
        [GenerationRequest(p, max_new_tokens=MAX_NEW) for p in PROMPTS],
        batch_size=batch_size,
    )
    assert [o.token_ids for o in outputs] == reference
    assert [o.text for o in outputs] == [model.tokenizer.decode(r) for r in reference]
    # A random model's argmax differs across these prompts: the test compares real decoding.
    assert len({tuple(r) for r in reference}) == len(PROMPTS)


@pytest.mark.parametrize("which", ["ours", "hf"])
def test_stop_strings_eos_and_max_new_tokens_as_transformers(
    which: str,
    ours: LanguageModel,
    theirs: LanguageModel,
    reference: list[list[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = ours if which == "ours" else theirs
    tokenizer = model.tokenizer
    # EOS: the 5th token generated for the second prompt; a stop string: the text of the
    # 4th token of the first; fewer new tokens for the third.
    eos = reference[1][4]
    stop = tokenizer.decode(reference[0][3:4]).strip()[:3] or tokenizer.decode(reference[0][3:4])
    monkeypatch.setattr(tokenizer, "eos_token_id", eos)
    requests = [
        GenerationRequest(PROMPTS[0], until=(stop, "\n\n"), max_new_tokens=MAX_NEW),
        GenerationRequest(PROMPTS[1], until=("\n\n",), max_new_tokens=MAX_NEW),
        GenerationRequest(PROMPTS[2], until=(), max_new_tokens=5),
        GenerationRequest(PROMPTS[3], until=(), max_new_tokens=MAX_NEW),
    ]
    outputs = generate(model, requests, batch_size=4)
    for request, ref, output in zip(requests, reference, outputs, strict=True):
        tokens, text = _apply_rules(tokenizer, ref[: request.max_new_tokens], request.until, eos)
        assert output.token_ids == tokens
        assert output.text == text
    assert outputs[0].stop_reason == "stop" and len(outputs[0].token_ids) <= 4
    assert stop not in outputs[0].text
    assert outputs[1].stop_reason == "eos" and outputs[1].token_ids == reference[1][:4]
    assert outputs[2].stop_reason == "length" and len(outputs[2].token_ids) == 5


def test_long_prompt_keeps_its_last_tokens(folder: Path) -> None:
    model = load_language_model(f"hf:{folder}", dtype=torch.float32)
    model.max_length = 24
    prompt = " ".join(["word"] * 40)
    [output] = generate(model, [GenerationRequest(prompt, max_new_tokens=4)])
    assert output.truncated and output.num_prompt_tokens == 20
    with pytest.raises(ValueError, match="leaves no room for a prompt"):
        generate(model, [GenerationRequest("Hi", max_new_tokens=24)])


def test_cut_at_stops_is_the_earliest_stop() -> None:
    assert cut_at_stops(" Paris.\n\nQuestion: next", ("Question:", "\n\n")) == " Paris."
    assert cut_at_stops(" Paris", ("\n",)) == " Paris"
    assert cut_at_stops("Q: a\n\n", ("\n\n", "Q:")) == ""


def test_request_validation() -> None:
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        GenerationRequest("x", max_new_tokens=0)
    with pytest.raises(ValueError, match="must not be empty"):
        GenerationRequest("x", until=("",))
