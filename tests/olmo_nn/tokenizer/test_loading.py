"""Loading tokenizers: by name, by path (any tokenizer.json), and the errors for bad input."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from olmo_assets.curation.local_sources import prose_documents
from olmo_nn.tokenizer import DEFAULT_TOKENIZER, Tokenizer, bpe


def _texts() -> list[str]:
    return [doc["text"] for doc in prose_documents()][:40]


def _train_byte_level_bpe(path: Path) -> Path:
    """A small GPT-2-style byte-level BPE trained here (no download), saved as tokenizer.json."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=["<|endoftext|>", "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_texts(), trainer=trainer)
    tok.save(str(path))
    return path


def test_default_is_olmo_tokenizer() -> None:
    tok = Tokenizer.from_name_or_path(DEFAULT_TOKENIZER)
    assert tok.name == DEFAULT_TOKENIZER
    assert tok.encode("Hello world") == [12092, 1533]
    assert Tokenizer.from_name_or_path("olmo").fingerprint == tok.fingerprint


def test_any_byte_level_bpe_by_path_runs_fast_and_matches(tmp_path: Path) -> None:
    path = _train_byte_level_bpe(tmp_path / "tokenizer.json")
    ours = Tokenizer.from_name_or_path(path)
    reference = tokenizers.Tokenizer.from_file(str(path))
    assert ours.engine == "tiktoken"
    assert ours.eos_token_id == reference.token_to_id("<|endoftext|>")
    assert ours.pad_token_id == reference.token_to_id("<|padding|>")
    # Counted from the JSON (the tokenizers library is only loaded when needed): the same.
    assert ours.vocab_size == reference.get_vocab_size(with_added_tokens=True)
    texts = [*_texts(), "a  b\n\n  c", "x<|endoftext|>y"]
    assert ours.encode_batch(texts) == [
        e.ids for e in reference.encode_batch(texts, add_special_tokens=False)
    ]
    # A folder holding tokenizer.json works too.
    assert Tokenizer.from_name_or_path(tmp_path).encode("folder") == ours.encode("folder")


def test_checked_merge_lists_do_reach_whole_tokens() -> None:
    """The merge lists whose check is skipped at load time (bpe.CHECKED_MERGES) pass it."""
    spec = json.loads(Path(bpe.__file__).with_name("data").joinpath(
        "allenai_gpt-neox-olmo-dolma-v1_5.json").read_text(encoding="utf-8"))  # fmt: skip
    pairs = bpe._merge_pairs(spec["model"])
    assert bpe.merges_digest(pairs) in bpe.CHECKED_MERGES
    assert len(bpe.CHECKED_MERGES) == 1  # each digest listed needs its file checked here
    assert bpe._merges_reach_whole_tokens(pairs)
    reference = tokenizers.Tokenizer.from_str(json.dumps(spec))
    olmo = Tokenizer.from_name_or_path()
    assert olmo.vocab_size == reference.get_vocab_size(with_added_tokens=True)


def test_other_tokenizer_types_fall_back_to_the_tokenizers_library(tmp_path: Path) -> None:
    tok = tokenizers.Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        _texts(), trainer=trainers.WordLevelTrainer(special_tokens=["[UNK]", "</s>"])
    )
    path = tmp_path / "wordlevel.json"
    tok.save(str(path))
    ours = Tokenizer.from_name_or_path(path)
    assert ours.engine == "tokenizers"
    assert ours.eos_token_id == tok.token_to_id("</s>")
    text = "The import statement"
    assert ours.encode(text) == tok.encode(text, add_special_tokens=False).ids
    assert [a.tolist() for a in ours.encode_batch_arrays([text])] == [ours.encode(text)]
    with pytest.raises(ValueError, match="cannot run on the tiktoken engine"):
        Tokenizer.from_name_or_path(path, engine="tiktoken")


def test_tokenizer_config_beside_the_json_sets_special_ids(tmp_path: Path) -> None:
    _train_byte_level_bpe(tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|padding|>"}))
    tok = Tokenizer.from_name_or_path(tmp_path)
    assert tok.eos_token_id == tokenizers.Tokenizer.from_file(
        str(tmp_path / "tokenizer.json")
    ).token_to_id("<|padding|>")


def test_missing_tokenizer_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        Tokenizer.from_name_or_path("EleutherAI/pythia-160m")
    message = str(error.value)
    assert "Nothing is downloaded at run time" in message
    assert (
        "tokenizers.Tokenizer.from_pretrained('EleutherAI/pythia-160m').save('tokenizer.json')"
        in message
    )
    with pytest.raises(FileNotFoundError, match=r"neither a tokenizer\.json file"):
        Tokenizer.from_name_or_path(tmp_path / "missing.json")


def test_pickles_for_process_pools(olmo_tokenizer: Tokenizer) -> None:
    clone = pickle.loads(pickle.dumps(olmo_tokenizer))
    assert clone.engine == "tiktoken"
    assert clone.encode("round trip") == olmo_tokenizer.encode("round trip")
    assert (clone.eos_token_id, clone.vocab_size) == (50279, 50280)


def test_lone_surrogates_are_refused(olmo_tokenizer: Tokenizer) -> None:
    for encode in (
        lambda text: olmo_tokenizer.encode(text),
        lambda text: olmo_tokenizer.encode_batch(["fine", text]),
        lambda text: olmo_tokenizer.encode_batch_arrays(["fine", text, "also fine"]),
    ):
        with pytest.raises(ValueError, match=r"lone surrogate '\\ud800' at character 2"):
            encode("ab\ud800cd")


def test_a_file_that_is_not_a_tokenizer_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from olmo_nn.cli.main import main

    expected = "expected a Hugging Face tokenizer.json"
    cases = {
        "config.json": (b'{"a": 1}', f'JSON, but not a tokenizer (no "model" section); {expected}'),
        "list.json": (b"[1, 2]", f'JSON, but not a tokenizer (no "model" section); {expected}'),
        "text.json": (b"hello", f"not JSON (Expecting value: line 1 column 1); {expected}"),
        "latin1.json": (b'{"\xe9": 1}', f"not UTF-8 text (byte 0xe9 at offset 2); {expected}"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError) as error:
            Tokenizer.from_name_or_path(path)
        assert str(error.value) == f"tokenizer file {path}: {message}"
    path = tmp_path / "bad_model.json"
    path.write_text('{"model": {"type": "nope"}}', encoding="utf-8")
    with pytest.raises(ValueError) as error:
        Tokenizer.from_name_or_path(path)
    message = str(error.value)
    assert message.startswith(f"tokenizer {path}: the tokenizers library cannot read it (")
    assert message.endswith(f"); {expected}")
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "a", "text": "x"}\n', encoding="utf-8")
    argv = ["data", "tokenize", str(docs), "-o", str(tmp_path / "out"), "--workers", "1"]
    assert main([*argv, "--tokenizer", str(tmp_path / "config.json")]) == 2
    assert capsys.readouterr().err == (
        f"olmo data: error: tokenizer file {tmp_path / 'config.json'}: JSON, but not a tokenizer "
        f'(no "model" section); {expected}\n'
    )
