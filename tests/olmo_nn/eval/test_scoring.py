"""Rank-classification log-likelihoods against transformers' forward pass and literal values."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch

from olmo_nn.checkpoint import save_checkpoint
from olmo_nn.eval.models import LanguageModel, load_language_model
from olmo_nn.eval.scoring import (
    Request,
    RequestScore,
    encode_request,
    normalize,
    score_requests,
    unconditional_requests,
)
from olmo_nn.eval.tasks import load_task
from olmo_nn.model import OLMo, TransformerConfig
from olmo_nn.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4
WINDOW = 64
PADDED_VOCAB = 50304

REQUESTS = [
    Request("Question: What is the capital of France?\nAnswer:", " Paris"),
    Request("Question: What is the capital of France?\nAnswer:", " the city of Lyon"),
    Request("The cat sat on the", " mat."),
    Request("Hello", " world, and goodbye to everyone here"),
    Request("A context that ends with a space ", "then the rest"),
    Request("", " an empty context"),
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_name_or_path()


def _eos(tokenizer: Tokenizer) -> int:
    assert tokenizer.eos_token_id is not None
    return tokenizer.eos_token_id


def _small_hf_olmo(seed: int, **options: Any) -> torch.nn.Module:
    """A random two-layer transformers OLMo with the lab tokenizer's vocabulary."""
    torch.manual_seed(seed)
    config = transformers.OlmoConfig(
        vocab_size=PADDED_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=WINDOW,
        **options,
    )
    return transformers.OlmoForCausalLM(config).eval()


@pytest.fixture(scope="module")
def hf_model() -> torch.nn.Module:
    return _small_hf_olmo(0, eos_token_id=50279, pad_token_id=1)


@pytest.fixture(scope="module")
def native_module() -> OLMo:
    config = TransformerConfig(d_model=32, n_heads=4, n_layers=2, max_sequence_length=WINDOW)
    model = OLMo(config)
    model.init_weights(seed=0)
    return model.eval()


def _wrap(module: torch.nn.Module, tokenizer: Tokenizer) -> LanguageModel:
    return LanguageModel(module, tokenizer, name="tiny", max_length=WINDOW, vocab_size=PADDED_VOCAB)


def _reference(module: torch.nn.Module, context: list[int], continuation: list[int]) -> float:
    """Full forward over context + continuation; log-softmax everywhere, summed by hand."""
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        out = module(ids)
    logits = out if isinstance(out, torch.Tensor) else out.logits
    logprobs = torch.log_softmax(logits[0].double(), dim=-1)
    return sum(float(logprobs[len(context) - 1 + j, token]) for j, token in enumerate(continuation))


@pytest.mark.parametrize("which", ["hf", "native"])
def test_separate_matches_full_forward(
    which: str, hf_model: torch.nn.Module, native_module: OLMo, tokenizer: Tokenizer
) -> None:
    module = hf_model if which == "hf" else native_module
    scores = score_requests(_wrap(module, tokenizer), REQUESTS, batch_size=4)
    for request, score in zip(REQUESTS, scores, strict=True):
        context = tokenizer.encode(request.context) or [_eos(tokenizer)]
        continuation = tokenizer.encode(request.continuation)
        expected = _reference(module, context, continuation)
        assert score.logprob_sum == pytest.approx(expected, abs=TOLERANCE)
        assert score.num_tokens == len(continuation)
        assert score.num_chars == len(request.continuation)
        assert not score.truncated


def test_joint_matches_full_forward(hf_model: torch.nn.Module, tokenizer: Tokenizer) -> None:
    scores = score_requests(_wrap(hf_model, tokenizer), REQUESTS, convention="joint")
    for request, score in zip(REQUESTS, scores, strict=True):
        context_text = request.context.rstrip()
        moved = request.context[len(context_text) :]
        whole = tokenizer.encode(context_text + moved + request.continuation)
        context = tokenizer.encode(context_text)
        continuation = whole[len(context) :]
        expected = _reference(hf_model, context or [_eos(tokenizer)], continuation)
        assert score.logprob_sum == pytest.approx(expected, abs=TOLERANCE)
        assert score.num_tokens == len(continuation)


def test_conventions_differ_when_context_ends_with_space(tokenizer: Tokenizer) -> None:
    request = Request("Answer: ", "yes")
    context_sep, continuation_sep = encode_request(tokenizer, request, "separate")
    context_joint, continuation_joint = encode_request(tokenizer, request, "joint")
    assert context_sep == tokenizer.encode("Answer: ")
    assert continuation_sep == tokenizer.encode("yes")
    # lm-eval moves the space onto the continuation: " yes" is one token in OLMo's BPE.
    assert context_joint == tokenizer.encode("Answer:")
    assert continuation_joint == tokenizer.encode(" yes")
    assert len(continuation_joint) == 1
    assert continuation_joint != continuation_sep


def test_conventions_agree_without_boundary_merge(
    hf_model: torch.nn.Module, tokenizer: Tokenizer
) -> None:
    request = Request("Question: Is the sky blue?\nAnswer:", " yes")
    assert encode_request(tokenizer, request, "separate") == encode_request(
        tokenizer, request, "joint"
    )
    model = _wrap(hf_model, tokenizer)
    separate = score_requests(model, [request], convention="separate")
    joint = score_requests(model, [request], convention="joint")
    assert separate == joint


def test_normalizations_on_literal_values() -> None:
    scores = [
        RequestScore(logprob_sum=-4.0, num_tokens=2, num_chars=8, is_greedy=False, truncated=False),
        RequestScore(logprob_sum=-3.0, num_tokens=1, num_chars=3, is_greedy=False, truncated=False),
    ]
    unconditional = [
        RequestScore(logprob_sum=-2.0, num_tokens=2, num_chars=8, is_greedy=False, truncated=False),
        RequestScore(logprob_sum=-2.5, num_tokens=1, num_chars=3, is_greedy=False, truncated=False),
    ]
    assert normalize(scores, "none") == [-4.0, -3.0]
    assert normalize(scores, "per_token") == [-2.0, -3.0]
    assert normalize(scores, "per_char") == [-0.5, -1.0]
    assert normalize(scores, "unconditional", unconditional=unconditional) == [-2.0, -0.5]
    with pytest.raises(ValueError, match="unconditional"):
        normalize(scores, "unconditional")
    with pytest.raises(ValueError, match="expected one of"):
        normalize(scores, "per_word")  # type: ignore[arg-type]


def test_unconditional_requests_use_answer_context() -> None:
    assert unconditional_requests([Request("Q?", " yes")]) == [Request("Answer:", " yes")]


def test_truncation_keeps_the_last_window(hf_model: torch.nn.Module, tokenizer: Tokenizer) -> None:
    long_context = " ".join(f"word{i}" for i in range(80))
    requests = [Request(long_context, " end of it"), Request("Short", " end of it")]
    scores = score_requests(_wrap(hf_model, tokenizer), requests)
    assert [s.truncated for s in scores] == [True, False]
    context = tokenizer.encode(long_context)
    continuation = tokenizer.encode(" end of it")
    assert len(context) + len(continuation) > WINDOW + 1
    whole = (context + continuation)[-(WINDOW + 1) :]
    expected = _reference(hf_model, whole[: -len(continuation)], continuation)
    assert scores[0].logprob_sum == pytest.approx(expected, abs=TOLERANCE)


def test_batch_size_invariance(native_module: OLMo, tokenizer: Tokenizer) -> None:
    model = _wrap(native_module, tokenizer)
    one = score_requests(model, REQUESTS, batch_size=1)
    eight = score_requests(model, REQUESTS, batch_size=8)
    for a, b in zip(one, eight, strict=True):
        assert a.logprob_sum == pytest.approx(b.logprob_sum, abs=1e-5)
        assert (a.num_tokens, a.num_chars, a.truncated) == (b.num_tokens, b.num_chars, b.truncated)


def test_is_greedy_on_a_model_that_always_predicts_one_token(tokenizer: Tokenizer) -> None:
    target = tokenizer.encode(" yes")[0]

    class Constant(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            logits = torch.zeros(*ids.shape, PADDED_VOCAB)
            logits[..., target] = 10.0
            return logits

    model = _wrap(Constant(), tokenizer)
    yes, no = score_requests(model, [Request("Answer:", " yes"), Request("Answer:", " no")])
    assert yes.is_greedy and not no.is_greedy


def test_vocabulary_mismatch_is_refused(native_module: OLMo, tokenizer: Tokenizer) -> None:
    with pytest.raises(ValueError, match="token ids but model"):
        LanguageModel(native_module, tokenizer, name="small", max_length=WINDOW, vocab_size=1000)


def test_load_native_and_hf_folders(
    hf_model: Any, native_module: OLMo, tokenizer: Tokenizer, tmp_path: Path
) -> None:
    save_checkpoint(native_module, tmp_path / "native")
    native = load_language_model(tmp_path / "native")
    assert (native.max_length, native.vocab_size) == (WINDOW, PADDED_VOCAB)
    assert native.tokenizer.eos_token_id == tokenizer.eos_token_id
    hf_model.save_pretrained(tmp_path / "hf")
    tokenizer.save(tmp_path / "hf")
    hf = load_language_model(f"hf:{tmp_path / 'hf'}")
    assert (hf.max_length, hf.vocab_size) == (WINDOW, PADDED_VOCAB)
    request = [REQUESTS[0]]
    expected = score_requests(_wrap(hf_model, tokenizer), request)[0].logprob_sum
    assert score_requests(hf, request)[0].logprob_sum == pytest.approx(expected, abs=TOLERANCE)
    # An OLMo folder runs on our OLMo (no transformers import); transformers' on request.
    assert isinstance(hf.module, OLMo) and hf.name == f"hf:{tmp_path / 'hf'}"
    theirs = load_language_model(f"hf:{tmp_path / 'hf'}", implementation="transformers")
    assert not isinstance(theirs.module, OLMo)
    assert (theirs.max_length, theirs.vocab_size) == (WINDOW, PADDED_VOCAB)
    assert score_requests(theirs, request)[0].logprob_sum == pytest.approx(expected, abs=TOLERANCE)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_language_model("hf:/no/such/folder")


def test_hf_folder_with_pickled_weights_only_is_refused(
    hf_model: Any, tokenizer: Tokenizer, tmp_path: Path
) -> None:
    folder = tmp_path / "hf"
    hf_model.save_pretrained(folder)
    tokenizer.save(folder)
    # What save_pretrained(safe_serialization=False) wrote (transformers >= 5 writes safetensors).
    (folder / "model.safetensors").unlink()
    torch.save(hf_model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ValueError) as error:
        load_language_model(f"hf:{folder}")
    assert str(error.value) == (
        f"{folder} holds pytorch_model.bin (pickle) and no safetensors weights; 'hf:' models "
        "load safetensors only, since unpickling can run code. Re-save it with safetensors, "
        "e.g. in transformers `AutoModelForCausalLM.from_pretrained(folder).save_pretrained(out)` "
        "(safetensors is its default format)"
    )


@pytest.mark.parametrize("which", ["hf", "native"])
def test_logits_at_equals_selected_full_logits(
    which: str, hf_model: torch.nn.Module, native_module: OLMo, tokenizer: Tokenizer
) -> None:
    model = _wrap(hf_model if which == "hf" else native_module, tokenizer)
    ids = torch.tensor([tokenizer.encode("one two three four"), tokenizer.encode("a b c d")])
    rows, positions = torch.tensor([0, 1, 1]), torch.tensor([3, 0, 2])
    full = model.logits(ids)[rows, positions]
    assert torch.allclose(model.logits_at(ids, rows, positions), full, atol=1e-5)


# ------------------------------------------------------------------ prefix sharing

LONG_CONTEXT = " ".join(f"word{i}" for i in range(80))
GROUPED_REQUESTS = [
    # One example, choices of 1, several and many tokens: one packed row.
    Request("Question: Which planet is the largest?\nAnswer:", " Jupiter"),
    Request("Question: Which planet is the largest?\nAnswer:", " the red planet Mars"),
    Request(
        "Question: Which planet is the largest?\nAnswer:",
        " none of them, since every planet is the same size as the others",
    ),
    Request("Question: Which planet is the largest?\nAnswer:", " Saturn"),
    # Truncated: each choice keeps a different tail of the context.
    Request(LONG_CONTEXT, " end"),
    Request(LONG_CONTEXT, " the end of it all"),
    Request(LONG_CONTEXT, " end"),
    # A context ending in a space (the conventions differ), and an empty one.
    Request("Fill in: the sky is ", "blue"),
    Request("Fill in: the sky is ", "green and yellow"),
    Request("", " an empty context"),
    Request("", " another one"),
]


@pytest.fixture(scope="module")
def hf_eager_model() -> torch.nn.Module:
    return _small_hf_olmo(1, attn_implementation="eager")


def _spy_rows(model: LanguageModel) -> list[tuple[int, int, bool]]:
    """Record (rows, width, packed) of every forward pass of ``model``."""
    calls: list[tuple[int, int, bool]] = []
    real = model.logits_at

    def spy(input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append((*input_ids.shape, kwargs.get("attention_mask") is not None))
        return real(input_ids, *args, **kwargs)

    model.logits_at = spy  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize("convention", ["separate", "joint"])
@pytest.mark.parametrize("which", ["native", "hf", "hf_eager"])
def test_shared_prefix_equals_one_row_per_request(
    which: str,
    convention: str,
    hf_model: torch.nn.Module,
    hf_eager_model: torch.nn.Module,
    native_module: OLMo,
    tokenizer: Tokenizer,
) -> None:
    module = {"native": native_module, "hf": hf_model, "hf_eager": hf_eager_model}[which]
    model = _wrap(module, tokenizer)
    assert model.accepts_packed_rows
    calls = _spy_rows(model)
    kwargs: dict[str, Any] = {"convention": convention, "batch_size": 3}
    shared = score_requests(model, GROUPED_REQUESTS, share_prefix=True, **kwargs)
    shared_calls = list(calls)
    calls.clear()
    separate = score_requests(model, GROUPED_REQUESTS, share_prefix=False, **kwargs)
    for a, b in zip(shared, separate, strict=True):
        assert a.logprob_sum == pytest.approx(b.logprob_sum, abs=1e-5)
        assert (a.num_tokens, a.is_greedy, a.truncated) == (b.num_tokens, b.is_greedy, b.truncated)
    assert [s.truncated for s in shared] == [False] * 4 + [True] * 3 + [False] * 4
    # The planet question is one row; the truncated choices of equal length share one too.
    assert sum(rows for rows, _, _ in shared_calls) < len(GROUPED_REQUESTS) - 3
    assert any(packed for _, _, packed in shared_calls)
    # One row per distinct request: the repeated (LONG_CONTEXT, " end") runs once.
    assert sum(rows for rows, _, _ in calls) == len(set(GROUPED_REQUESTS)) == 10
    assert not any(packed for _, _, packed in calls)
    assert separate[4] == separate[6] and shared[4] == shared[6]


def test_shared_prefix_matches_full_forward(native_module: OLMo, tokenizer: Tokenizer) -> None:
    requests = GROUPED_REQUESTS[:4]
    scores = score_requests(_wrap(native_module, tokenizer), requests, batch_size=1)
    for request, score in zip(requests, scores, strict=True):
        context = tokenizer.encode(request.context)
        expected = _reference(native_module, context, tokenizer.encode(request.continuation))
        assert score.logprob_sum == pytest.approx(expected, abs=TOLERANCE)


def test_batches_are_bounded_by_tokens(native_module: OLMo, tokenizer: Tokenizer) -> None:
    model = _wrap(native_module, tokenizer)
    calls = _spy_rows(model)
    bounded = score_requests(model, GROUPED_REQUESTS, batch_size=8, max_batch_tokens=WINDOW)
    assert len(calls) > 1
    assert all(rows * width <= WINDOW for rows, width, _ in calls)
    free = score_requests(model, GROUPED_REQUESTS, batch_size=8)
    for a, b in zip(bounded, free, strict=True):
        assert a.logprob_sum == pytest.approx(b.logprob_sum, abs=1e-5)
    with pytest.raises(ValueError, match="max_batch_tokens"):
        score_requests(model, GROUPED_REQUESTS, max_batch_tokens=WINDOW - 1)


def test_models_without_packed_rows_score_one_row_per_request(tokenizer: Tokenizer) -> None:
    class Plain(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Embedding(PADDED_VOCAB, 8)
            self.head = torch.nn.Linear(8, PADDED_VOCAB)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.embedding(ids).cumsum(dim=1))

    model = _wrap(Plain(), tokenizer)
    assert not model.accepts_packed_rows
    calls = _spy_rows(model)
    shared = score_requests(model, GROUPED_REQUESTS[:4], share_prefix=True, batch_size=1)
    assert len(calls) == 4
    separate = score_requests(model, GROUPED_REQUESTS[:4], share_prefix=False, batch_size=1)
    assert [s.logprob_sum for s in shared] == [s.logprob_sum for s in separate]
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="share_prefix=False"):
        model.logits_at(ids, torch.tensor([0]), torch.tensor([0]), position_ids=ids)


def test_native_forward_with_explicit_positions_and_causal_mask(native_module: OLMo) -> None:
    ids = torch.randint(0, 50000, (2, 12), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(12).expand(2, 12)
    causal = torch.ones(12, 12, dtype=torch.bool).tril().expand(2, 1, 12, 12)
    with torch.no_grad():
        default = native_module(ids)
        explicit = native_module(ids, position_ids=positions, attention_mask=causal)
        selected = native_module(ids, logits_at=(torch.tensor([1, 0]), torch.tensor([3, 11])))
        gapped = native_module(ids, position_ids=positions + (positions >= 6) * 5)
    assert torch.allclose(explicit, default, atol=1e-6)
    assert torch.allclose(selected, default[[1, 0], [3, 11]], atol=1e-6)
    assert torch.allclose(gapped[:, :6], default[:, :6], atol=1e-6)
    assert not torch.allclose(gapped[:, 6:], default[:, 6:], atol=1e-3)  # RoPE saw the gap


def test_row_width_and_logits_limits_leave_the_scores_unchanged(
    native_module: OLMo, tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many continuations of one short context (the unconditional requests' shape): with the
    packed-row width and the logits budget made tiny, rows split and batches shrink, and every
    score stays what one row per request gives."""
    from olmo_nn.eval import scoring

    words = ["yes", "no", "maybe", "a cat", "the red house", "forty-two", "blue", "never again"]
    requests = [Request("Answer:", f" {word}") for word in words] * 2 + [
        Request("Answer:", " " + " ".join(words))
    ]
    model = _wrap(native_module, tokenizer)
    reference = score_requests(model, requests, share_prefix=False, batch_size=32)
    calls = _spy_rows(model)
    wide = score_requests(model, requests, share_prefix=True, batch_size=32)
    wide_calls = list(calls)
    monkeypatch.setattr(scoring, "PACKED_ROW_TOKENS", 6)
    longest = max(len(tokenizer.encode(r.context + r.continuation)) for r in requests) - 1
    positions = 5
    monkeypatch.setattr(scoring, "MAX_LOGITS_BYTES", 4 * PADDED_VOCAB * positions)
    calls.clear()
    narrow = score_requests(model, requests, share_prefix=True, batch_size=32)
    for scores in (wide, narrow):
        for a, b in zip(scores, reference, strict=True):
            assert a.logprob_sum == pytest.approx(b.logprob_sum, abs=1e-5)
            assert (a.num_tokens, a.is_greedy) == (b.num_tokens, b.is_greedy)
    # Unlimited, the 9 distinct requests pack into one row; limited, rows are at most the
    # longest request wide and several forward passes share out the logits budget.
    assert sum(rows for rows, _, _ in wide_calls) == 1
    assert all(width <= longest for _, width, _ in calls)
    assert sum(rows for rows, _, _ in calls) > 1 and len(calls) > len(wide_calls)


# ------------------------------------------------------------------ few-shot prefixes

WIDE_WINDOW = 1024
MMLU_SUBJECTS = ("abstract_algebra", "marketing")


@pytest.fixture(scope="module")
def wide_module() -> OLMo:
    config = TransformerConfig(d_model=32, n_heads=4, n_layers=2, max_sequence_length=WIDE_WINDOW)
    model = OLMo(config)
    model.init_weights(seed=0)
    return model.eval()


def _wrap_wide(module: OLMo, tokenizer: Tokenizer, window: int = WIDE_WINDOW) -> LanguageModel:
    return LanguageModel(module, tokenizer, name="wide", max_length=window, vocab_size=PADDED_VOCAB)


def _task_requests(name: str, cache_dir: Path, questions: int, **options: Any) -> list[Request]:
    instances = load_task(name, limit=None, cache_dir=cache_dir, **options)[:questions]
    return [Request(context, continuation) for i in instances for context, continuation in i.pairs]


def _mmlu(fmt: str, cache_dir: Path, questions: int = 8) -> list[Request]:
    return [
        request
        for subject in MMLU_SUBJECTS
        for request in _task_requests(f"mmlu_{subject}:{fmt}", cache_dir, questions, num_shots=5)
    ]


def _assert_same_scores(ours: list[RequestScore], reference: list[RequestScore]) -> None:
    for a, b in zip(ours, reference, strict=True):
        assert a.logprob_sum == pytest.approx(b.logprob_sum, abs=1e-5)
        assert (a.num_tokens, a.is_greedy, a.truncated) == (b.num_tokens, b.is_greedy, b.truncated)


def _tokens_fed(calls: list[tuple[int, int, bool]]) -> int:
    return sum(rows * width for rows, width, _ in calls)


def test_tree_row_positions_and_mask_on_literal_values() -> None:
    from olmo_nn.eval.scoring import _block_mask, _Row, _Sequence

    row = _Row.of_context([10, 11])  # the shared prefix
    first = row.add_segment([12], 0)  # context 1: [10, 11, 12]
    row.add(_Sequence(0, [10, 11, 12], [20, 21], False), first)
    row.add(_Sequence(1, [10, 11, 12], [22], False), first)  # one token: no segment
    second = row.add_segment([13, 14], 0)  # context 2: [10, 11, 13, 14]
    row.add(_Sequence(2, [10, 11, 13, 14], [23, 24, 25], False), second)
    assert row.input_ids == [10, 11, 12, 20, 13, 14, 23, 24]
    assert row.position_ids == [0, 1, 2, 3, 2, 3, 4, 5]
    assert row.parents == [-1, 0, 1, 0, 3]
    assert [positions for _, _, positions in row.scored] == [[2, 3], [2], [5, 6, 7]]
    assert row.key_ends() == [8, 8, 4, 4, 8, 8, 8, 8]
    assert not row.is_causal
    mask = _block_mask(torch.tensor([[*row.key_ends(), 9]]))[0, 0].int().tolist()
    assert mask == [
        [1, 0, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0, 0],  # continuation 0 sees the prefix and context 1
        [1, 1, 0, 0, 1, 0, 0, 0, 0],  # context 2 sees the prefix only
        [1, 1, 0, 0, 1, 1, 0, 0, 0],
        [1, 1, 0, 0, 1, 1, 1, 0, 0],
        [1, 1, 0, 0, 1, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 1],  # padding sees itself
    ]
    chain = _Row.of_context([1, 2])
    chain.add(_Sequence(0, [1, 2, 3], [4, 5], False), chain.add_segment([3], 0))
    assert chain.is_causal and chain.position_ids == [0, 1, 2, 3]


@pytest.mark.parametrize("which", ["native", "hf", "hf_eager"])
def test_contexts_with_a_long_common_prefix_share_a_row(
    which: str,
    hf_model: torch.nn.Module,
    hf_eager_model: torch.nn.Module,
    native_module: OLMo,
    tokenizer: Tokenizer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Within the small window: a 30-token "few-shot" prefix, made long enough to share."""
    from olmo_nn.eval import scoring

    monkeypatch.setattr(scoring, "MIN_SHARED_PREFIX_TOKENS", 16)
    prefix = " ".join(f"shot{i}" for i in range(15)) + "\n"
    questions = ["Is it red?", "Is it blue and green?", "Why?", ""]
    choices = [" yes", " no", " not at all, never"]
    requests = [Request(prefix + q, c) for q in questions for c in choices]
    module = {"native": native_module, "hf": hf_model, "hf_eager": hf_eager_model}[which]
    model = _wrap(module, tokenizer)
    calls = _spy_rows(model)
    shared = score_requests(model, requests, batch_size=4)
    assert sum(rows for rows, _, _ in calls) < len(questions)
    _assert_same_scores(shared, score_requests(model, requests, share_prefix=False))


@pytest.mark.parametrize("fmt", ["mc", "rc"])
def test_mmlu_five_shot_prefix_is_shared(
    fmt: str,
    wide_module: OLMo,
    tokenizer: Tokenizer,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from olmo_nn.eval import scoring

    requests = _mmlu(fmt, cache_dir)
    requests.append(requests[5])  # an identical request is scored once
    if fmt == "rc":
        assert any(len(tokenizer.encode(r.continuation)) > 1 for r in requests)
    model = _wrap_wide(wide_module, tokenizer)
    reference = score_requests(model, requests, share_prefix=False, convention="joint")
    calls = _spy_rows(model)
    shared = score_requests(model, requests, convention="joint")
    _assert_same_scores(shared, reference)
    shared_tokens = _tokens_fed(calls)
    # The rows of one context each (before prefixes were shared) feed the prefix per question.
    calls.clear()
    monkeypatch.setattr(scoring, "MIN_SHARED_PREFIX_TOKENS", 10**9)
    _assert_same_scores(score_requests(model, requests, convention="joint"), reference)
    assert _tokens_fed(calls) >= 3 * shared_tokens
    # Small batches and a small logits budget split the tree rows' work, not their scores.
    monkeypatch.undo()
    monkeypatch.setattr(scoring, "MAX_LOGITS_BYTES", 4 * PADDED_VOCAB * 3)
    _assert_same_scores(
        score_requests(model, requests, convention="joint", batch_size=2), reference
    )


def test_one_subject_feeds_three_times_fewer_tokens(
    wide_module: OLMo, tokenizer: Tokenizer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from olmo_nn.eval import scoring

    requests = _task_requests("mmlu_anatomy:mc", cache_dir, 8, num_shots=5)
    model = _wrap_wide(wide_module, tokenizer)
    calls = _spy_rows(model)
    shared = score_requests(model, requests)
    shared_tokens = _tokens_fed(calls)
    calls.clear()
    monkeypatch.setattr(scoring, "MIN_SHARED_PREFIX_TOKENS", 10**9)  # a row per question
    _assert_same_scores(shared, score_requests(model, requests))
    assert _tokens_fed(calls) >= 3 * shared_tokens


def test_zero_shot_contexts_pack_as_before_beside_few_shot_ones(
    wide_module: OLMo, tokenizer: Tokenizer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from olmo_nn.eval import scoring

    arc = _task_requests("arc_easy", cache_dir, 12)
    model = _wrap_wide(wide_module, tokenizer)
    calls = _spy_rows(model)
    score_requests(model, arc)
    arc_calls = list(calls)
    calls.clear()
    monkeypatch.setattr(scoring, "MIN_SHARED_PREFIX_TOKENS", 10**9)
    score_requests(model, arc)
    assert calls == arc_calls  # no ARC context shares 64 tokens with another
    monkeypatch.undo()
    mixed = _mmlu("mc", cache_dir, questions=4) + arc
    _assert_same_scores(
        score_requests(model, mixed), score_requests(model, mixed, share_prefix=False)
    )


def test_few_shot_contexts_longer_than_the_window(
    wide_module: OLMo, tokenizer: Tokenizer, cache_dir: Path
) -> None:
    requests = _mmlu("rc", cache_dir, questions=4)
    lengths = [len(tokenizer.encode(r.context + r.continuation)) for r in requests]
    window = sorted(lengths)[len(lengths) // 2]
    model = _wrap_wide(wide_module, tokenizer, window=window)
    shared = score_requests(model, requests, convention="joint")
    assert any(s.truncated for s in shared) and not all(s.truncated for s in shared)
    _assert_same_scores(
        shared, score_requests(model, requests, convention="joint", share_prefix=False)
    )


def _random_few_shot_requests(seed: int, threshold: int) -> list[Request]:
    """Groups of contexts sharing a prefix of about ``threshold`` tokens (one less, exactly,
    one more, or anything up to past the window), rests of 0 to a window's tokens, one to
    many-token continuations, some requests twice; token ids written as text."""
    rng = random.Random(seed)
    requests = []
    for _ in range(rng.randint(1, 4)):
        length = rng.choice([threshold - 1, threshold, threshold + 1, rng.randint(1, WINDOW + 8)])
        prefix = [rng.randint(10, 1000) for _ in range(length)]
        for _ in range(rng.randint(1, 5)):
            rest = [
                rng.randint(10, 1000) for _ in range(rng.choice([0, 1, rng.randint(0, WINDOW)]))
            ]
            for _ in range(rng.randint(1, 3)):
                size = rng.choice([1, 2, rng.randint(1, WINDOW // 2)])
                continuation = [rng.randint(10, 1000) for _ in range(size)]
                request = Request(
                    " ".join(map(str, prefix + rest)), " ".join(map(str, continuation))
                )
                requests += [request] * rng.choice([1, 1, 1, 2])
    rng.shuffle(requests)
    return requests


@pytest.mark.parametrize("seed", range(4))
def test_random_shared_prefixes_score_as_one_row_per_request(
    seed: int, native_module: OLMo, tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefixes at the sharing threshold, contexts past the window, multi-token continuations,
    small batches and a small logits budget: the tree rows change no score."""
    from olmo_nn.eval import scoring

    def token_ids(
        tokenizer: Tokenizer, requests: list[Request], convention: str
    ) -> list[tuple[list[int], list[int]]]:
        return [([int(t) for t in r.context.split()], [int(t) for t in r.continuation.split()])
                for r in requests]  # fmt: skip

    monkeypatch.setattr(scoring, "encode_requests", token_ids)
    monkeypatch.setattr(scoring, "MIN_SHARED_PREFIX_TOKENS", 8)
    monkeypatch.setattr(scoring, "MAX_LOGITS_BYTES", 4 * PADDED_VOCAB * 5)
    requests = _random_few_shot_requests(seed, threshold=8)
    model = _wrap(native_module, tokenizer)
    calls = _spy_rows(model)
    shared = score_requests(model, requests, batch_size=3, max_batch_tokens=2 * WINDOW)
    assert any(packed for _, _, packed in calls) or seed != 0
    reference = score_requests(model, requests, share_prefix=False, batch_size=1)
    _assert_same_scores(shared, reference)
    for a, b in zip(shared, reference, strict=True):
        assert (a.num_tokens, a.is_greedy, a.truncated) == (b.num_tokens, b.is_greedy, b.truncated)


def test_shared_prefixes_group_contexts_with_most_of_their_tokens_in_common() -> None:
    from olmo_nn.eval.scoring import _shared_prefixes

    prompt = tuple(range(1000, 1100))  # 100 tokens of "shots"
    contexts = [
        (*prompt, 1, 2, 3),
        (5, 6, 7),  # shares nothing
        (*prompt, 4),
        prompt,  # the prompt alone
        (*prompt[:70], *range(2000, 2080)),  # 70 common tokens, less than half of its 150
        (*prompt, *range(3000, 3090)),  # 100 common tokens, more than half of its 190
    ]
    groups = _shared_prefixes(contexts)
    assert sorted(groups) == [(3, [1]), (100, [0, 2, 3, 5]), (150, [4])]
