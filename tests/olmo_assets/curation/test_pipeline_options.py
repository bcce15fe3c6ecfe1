"""Curation options end to end: fastText classifiers, the MinHash method, the dedup state."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

import polars as pl
import pytest

from olmo_assets.curation.config import (
    CurationConfig,
    DedupConfig,
    FastTextClassifierConfig,
    RuleConfig,
    SourceConfig,
)
from olmo_assets.curation.pipeline import curate
from olmo_assets.curation.taggers.language import locate_language_model
from olmo_nn.config import ConfigError

ENGLISH = "The committee met on Tuesday and agreed to publish the report next month."
FRENCH = "Le comité s'est réuni mardi et a décidé de publier le rapport le mois prochain."


def _write(path: Path, records: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _kept(out: Path, source: str) -> list[str]:
    ids = []
    for part in sorted((out / "documents" / source).glob("*.jsonl.gz")):
        with gzip.open(part, "rt") as lines:
            ids += [json.loads(line)["id"] for line in lines]
    return ids


def _removed(out: Path, source: str) -> dict[str, str]:
    folder = out / "removed" / source
    if not folder.exists():
        return {}
    frame = pl.read_parquet(folder)
    return {i: f"{s}/{r}" for i, s, r in frame.select("id", "stage", "reason").iter_rows()}


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------- fastText classifiers
def test_fasttext_classifier_from_a_config_file(tmp_path: Path) -> None:
    """A local fastText model (here the lid.176 language model, a real fastText classifier)
    declared in a config YAML, named in taggers, thresholded by a rule."""
    from olmo_nn.cli.main import main

    _write(tmp_path / "raw" / "web" / "a.jsonl", [
        {"id": "en", "text": f"{ENGLISH}\n{ENGLISH}"},
        {"id": "fr", "text": FRENCH},
        {"id": "mixed", "text": f"{ENGLISH} {FRENCH}"},
    ])  # fmt: skip
    model = locate_language_model()
    mix = tmp_path / "mix.yaml"
    mix.write_text(
        "sources: []\ntaggers: [length, english, english_sentences]\n"
        "fasttext_classifiers:\n"
        f"  - {{name: english, model: '{model}', positive_label: en, level: document}}\n"
        f"  - {{name: english_sentences, model: '{model}', positive_label: __label__en}}\n"
        "rules:\n"
        "  - {name: not_english, stage: language, remove_if: 'english__score < 0.5'}\n"
        "dedup: {url: false, exact: false, paragraphs: false}\n"
    )
    out = tmp_path / "out"
    code = main(["data", "curate", "--config", str(mix), "--source",
                 f"web={tmp_path / 'raw' / 'web'}", "--output", str(out), "--workers", "1"])  # fmt: skip
    assert code == 0
    # The mixed document reads as French as a whole; its English sentence does not.
    assert _removed(out, "web") == {"fr": "language/not_english", "mixed": "language/not_english"}
    assert _kept(out, "web") == ["en"]
    scores = pl.read_parquet(out / "attributes" / "english" / "web")
    assert scores.columns == ["id", "english__score"]
    en, fr, mixed_score = scores["english__score"].to_list()
    assert en > 0.8 and fr < 0.01 and mixed_score < 0.5
    sentences = pl.read_parquet(out / "attributes" / "english_sentences" / "web")
    assert sentences.columns == [
        "id",
        "english_sentences__sentence_spans",
        "english_sentences__sentence_scores",
        "english_sentences__max_score",
    ]
    mixed = sentences.row(2, named=True)
    english_score, french_score = mixed["english_sentences__sentence_scores"]
    assert english_score > 0.8 and french_score < 0.01
    assert mixed["english_sentences__sentence_spans"][1]["start"] == len(ENGLISH) + 1


def test_fasttext_classifier_runs_in_worker_processes(tmp_path: Path) -> None:
    _write(tmp_path / "raw" / "a.jsonl", [{"id": f"d{i}", "text": FRENCH} for i in range(6)])
    config = CurationConfig(
        sources=[SourceConfig(name="web", paths=[str(tmp_path / "raw")])],
        taggers=["english"],
        fasttext_classifiers=[
            FastTextClassifierConfig(
                name="english",
                model=str(locate_language_model()),
                positive_label="en",
                level="document",
            )
        ],
        rules=[RuleConfig(name="not_english", stage="language", remove_if="english__score < 0.5")],
        dedup=DedupConfig(url=False, exact=False, paragraphs=False),
        batch_size=2,
        workers=1,
    )
    curate(config, tmp_path / "one")
    curate(config.replace(workers=2), tmp_path / "two")
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")
    assert len(_removed(tmp_path / "one", "web")) == 6


def test_fasttext_classifier_config_errors_are_clear(tmp_path: Path) -> None:
    _write(tmp_path / "raw" / "a.jsonl", [{"id": "d", "text": ENGLISH}])
    model = str(locate_language_model())

    def config(**classifier: str) -> CurationConfig:
        fields = {"name": "quality", "model": model, "positive_label": "en", **classifier}
        return CurationConfig.from_dict({
            "sources": [{"name": "web", "paths": [str(tmp_path / "raw")]}],
            "taggers": ["length", fields["name"]],
            "fasttext_classifiers": [fields],
            "dedup": {"url": False, "exact": False, "paragraphs": False},
            "workers": 1,
        })  # fmt: skip

    missing = tmp_path / "models" / "jigsaw_hatespeech.bin"
    with pytest.raises(
        FileNotFoundError, match=rf"'quality'.*{re.escape(str(missing))} does not exist"
    ):
        curate(config(model=str(missing)), tmp_path / "out")
    not_a_model = _write(tmp_path / "fake.bin", [{"not": "a model"}])
    with pytest.raises(ValueError, match=r"fake\.bin is not a fastText model file"):
        curate(config(model=str(not_a_model)), tmp_path / "out")
    with pytest.raises(ValueError, match=r"has no label 'toxic'; its labels are 'en', 'ru'"):
        curate(config(positive_label="toxic"), tmp_path / "out")
    with pytest.raises(ValueError, match="'gopher' is the name of a built-in tagger"):
        curate(config(name="gopher"), tmp_path / "out")
    with pytest.raises(ConfigError, match="level") as error:
        config(level="paragraph")
    assert "'paragraph'" in str(error.value) and "sentence" in str(error.value)
    with pytest.raises(ConfigError, match="name must be lowercase"):
        config(name="Jigsaw")
    unknown = config().replace(taggers=["length", "jigsaw"])
    with pytest.raises(ValueError, match=r"unknown tagger 'jigsaw'.*fasttext_classifiers in this"):
        curate(unknown, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------- MinHash method
_WORDS = [f"w{i}" for i in range(200)]
# Windows of 100 words shifted by 13: A~B and B~C share LSH bands, A and C share none.
CHAIN = {name: " ".join(_WORDS[13 * i : 13 * i + 100]) for i, name in enumerate("ABC")}


def test_the_chain_is_a_transitive_case() -> None:
    from olmo_assets.curation.minhash import MinHashConfig, MinHasher

    config = MinHashConfig()
    signatures = MinHasher(config).signatures(list(CHAIN.values()))
    rows = config.rows_per_band
    bands = [
        {(b, s[b * rows : (b + 1) * rows].tobytes()) for b in range(config.num_bands)}
        for s in signatures
    ]
    assert bands[0] & bands[1] and bands[1] & bands[2] and not bands[0] & bands[2]


def _chain_config(tmp_path: Path, method: str) -> CurationConfig:
    # Corpus order A, C, B: C is seen before the document that links it to A.
    _write(tmp_path / "raw" / "a.jsonl", [{"id": n, "text": CHAIN[n]} for n in "ACB"])
    return CurationConfig.from_dict({
        "sources": [{"name": "web", "paths": [str(tmp_path / "raw")]}],
        "taggers": ["length"],
        "dedup": {"url": False, "exact": False, "paragraphs": False, "minhash": True,
                  "minhash_method": method, "expected_documents": 1000},
        "batch_size": 2,
        "workers": 1,
    })  # fmt: skip


def test_online_and_clusters_minhash_differ_on_a_transitive_chain(tmp_path: Path) -> None:
    curate(_chain_config(tmp_path, "online"), tmp_path / "online")
    curate(_chain_config(tmp_path, "clusters"), tmp_path / "clusters")
    # online: C shares no band with A (the only document before it), so it stays.
    assert _removed(tmp_path / "online", "web") == {"B": "fuzzy_dedup/near_duplicate"}
    assert _kept(tmp_path / "online", "web") == ["A", "C"]
    # clusters: A-B-C is one cluster through B; all but its first document go.
    assert _removed(tmp_path / "clusters", "web") == {
        "C": "fuzzy_dedup/near_duplicate",
        "B": "fuzzy_dedup/near_duplicate",
    }
    assert _kept(tmp_path / "clusters", "web") == ["A"]
    minhash = pl.read_parquet(tmp_path / "clusters" / "attributes" / "minhash" / "web")
    assert minhash.rows() == [("A", False), ("C", True), ("B", True)]
    assert list(tmp_path.glob(".clusters*")) == []  # the scratch folder is gone
    with pytest.raises(ConfigError, match="minhash_method") as error:
        DedupConfig.from_dict({"minhash": True, "minhash_method": "exact"})
    assert "'exact'" in str(error.value) and "clusters" in str(error.value)


def test_clusters_stage_by_stage_equals_one_pass(tmp_path: Path) -> None:
    config = _chain_config(tmp_path, "clusters")
    curate(config, tmp_path / "one_pass")
    curate(config, tmp_path / "tag", stages=("tag",))
    curate(config, tmp_path / "dedup", stages=("dedup",))
    curate(config, tmp_path / "mix", stages=("mix",),
           attributes_from=[tmp_path / "tag", tmp_path / "dedup"])  # fmt: skip
    one, staged = _digest(tmp_path / "one_pass"), _digest(tmp_path / "mix")
    for key in one:
        if key.startswith(("documents/", "removed/")) or key == "report.json":
            assert staged.get(key) == one[key], key
    assert (tmp_path / "dedup" / "attributes" / "minhash" / "web").is_dir()


# --------------------------------------------------------------------- dedup state
_TEXT = " ".join(f"word{i}" for i in range(120))
_OTHER = " ".join(f"term{i}" for i in range(120))
_EVAL = "the quick brown fox jumps over the lazy dog while the cat watches from afar"


def _state_mix(tmp_path: Path, method: str = "online", decontaminate: bool = False) -> Path:
    mix = tmp_path / f"mix-{method}-{decontaminate}.yaml"
    _write(tmp_path / "eval.jsonl", [{"text": f"intro\n{_EVAL}\n"}])
    eval_paths = f"[{tmp_path / 'eval.jsonl'}]" if decontaminate else "[]"
    mix.write_text(
        "sources: []\ntaggers: [length]\nrules:\n"
        "  - {name: duplicate_text, stage: exact_dedup, remove_if: dedup__text_duplicate}\n"
        "dedup: {url: true, exact: true, paragraphs: true, minhash: true, "
        f"minhash_method: {method}, expected_documents: 1000, expected_paragraphs: 1000}}\n"
        f"decontamination_paths: {eval_paths}\n"
    )
    return mix


def _curate_cli(mix: Path, source: str, folder: Path, out: Path, state: Path) -> int:
    from olmo_nn.cli.main import main

    return main(["data", "curate", "--config", str(mix), "--source", f"{source}={folder}",
                 "--output", str(out), "--workers", "1", "--dedup-state", str(state)])  # fmt: skip


@pytest.mark.parametrize("method", ["online", "clusters"])
def test_dedup_state_deduplicates_a_new_source_against_the_corpus(
    tmp_path: Path, method: str, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = _write(tmp_path / "raw" / "a" / "a.jsonl", [
        {"id": "a1", "text": _TEXT},
        {"id": "a2", "text": _OTHER},
    ])  # fmt: skip
    new = _write(tmp_path / "raw" / "b" / "b.jsonl", [
        {"id": "b1", "text": "fresh text " * 30},
        {"id": "copy", "text": _TEXT},  # the same text as a1
        {"id": "near", "text": _OTHER.replace("term60 ", "changed ")},  # close to a2
    ])  # fmt: skip
    mix, state = _state_mix(tmp_path, method, decontaminate=True), tmp_path / "state"
    assert _curate_cli(mix, "a", corpus.parent, tmp_path / "run1", state) == 0
    manifest = json.loads((state / "state.json").read_text())
    assert manifest["documents"] == 2 and manifest["dedup"]["minhash_method"] == method
    assert sorted(p.name for p in state.iterdir()) == ["decontam", "dedup", "minhash", "state.json"]
    assert "dedup state saved to" in capsys.readouterr().out

    # Without the state, source b alone has nothing to remove.
    plain = _state_mix(tmp_path, method)
    assert _curate_cli(plain, "b", new.parent, tmp_path / "alone", tmp_path / "other") == 0
    assert _removed(tmp_path / "alone", "b") == {}

    # With it, the copy of a1 goes as an exact duplicate, the near copy of a2 as a near one.
    assert _curate_cli(mix, "b", new.parent, tmp_path / "run2", state) == 0
    assert _removed(tmp_path / "run2", "b") == {
        "copy": "exact_dedup/duplicate_text",
        "near": "fuzzy_dedup/near_duplicate",
    }
    assert _kept(tmp_path / "run2", "b") == ["b1"]
    manifest = json.loads((state / "state.json").read_text())
    assert manifest["documents"] == 5
    assert [run["documents"] for run in manifest["runs"]] == [{"a": 2}, {"b": 3}]
    assert manifest["stats"]["dedup"]["texts"]["num_added"] == 4  # all but the exact copy
    assert list(tmp_path.glob(".state*")) == []


def test_dedup_state_keeps_the_decontamination_index(tmp_path: Path) -> None:
    corpus = _write(tmp_path / "raw" / "a" / "a.jsonl", [{"id": "a1", "text": _TEXT}])
    leaked = _write(tmp_path / "raw" / "b" / "b.jsonl", [
        {"id": "leak", "text": f"{' '.join(f'other{i}' for i in range(80))}\n{_EVAL}\n"},
    ])  # fmt: skip
    state = tmp_path / "state"
    _curate_cli(
        _state_mix(tmp_path, decontaminate=True), "a", corpus.parent, tmp_path / "r1", state
    )
    # The second run's config names no evaluation data: the state's index is used.
    _curate_cli(_state_mix(tmp_path), "b", leaked.parent, tmp_path / "r2", state)
    assert _removed(tmp_path / "r2", "b") == {"leak": "decontamination/contaminated"}


def test_dedup_state_refuses_other_settings_and_survives_failures(tmp_path: Path) -> None:
    corpus = _write(tmp_path / "raw" / "a" / "a.jsonl", [{"id": "a1", "text": _TEXT}])
    state = tmp_path / "state"
    mix = _state_mix(tmp_path)
    assert _curate_cli(mix, "a", corpus.parent, tmp_path / "r1", state) == 0
    before = _digest(state)
    config = CurationConfig.load(mix).replace(
        sources=[SourceConfig(name="a", paths=[str(corpus.parent)])]
    )
    bigger = config.replace(dedup=config.dedup.replace(expected_documents=5000))
    with pytest.raises(ConfigError, match="expected_documents: 1000 in the state, 5000 in the"):
        curate(bigger, tmp_path / "r2", dedup_state=state)
    broken = config.replace(rules=[RuleConfig(name="broken", remove_if="no_such_column")])
    with pytest.raises(ValueError, match="broken"):
        curate(broken, tmp_path / "r2", dedup_state=state)
    assert _digest(state) == before and not (tmp_path / "r2").exists()
    with pytest.raises(ValueError, match="already holds the documents of the run that wrote"):
        curate(config, tmp_path / "r1", dedup_state=state)  # r1 again: all its own duplicates
    with pytest.raises(ValueError, match="needs the dedup stage"):
        curate(config, tmp_path / "r2", stages=("tag",), dedup_state=state)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "notes.txt").write_text("mine")
    with pytest.raises(FileNotFoundError, match="holds no dedup state"):
        curate(config, tmp_path / "r2", dedup_state=tmp_path / "elsewhere")
    nothing = config.replace(
        dedup=DedupConfig(url=False, exact=False, paragraphs=False), decontamination_paths=[]
    )
    with pytest.raises(ValueError, match="deduplicates nothing"):
        curate(nothing, tmp_path / "r2", dedup_state=tmp_path / "new")


# --------------------------------------------------------------------- built-in mixes by name
def test_config_option_takes_a_built_in_mix_name(tmp_path: Path) -> None:
    from olmo_assets.curation.cli import _load_config
    from olmo_assets.curation.mixes import dolma_v1_5_config, gopher_paper_config

    assert _load_config("gopher_paper") == gopher_paper_config()
    assert _load_config(None) == dolma_v1_5_config()
    with pytest.raises(FileNotFoundError, match="not a built-in mix"):
        _load_config("gopher")
    yaml = tmp_path / "gopher_paper"
    gopher_paper_config().replace(seed=3).save(yaml)
    assert _load_config(str(yaml)).seed == 3  # a file of that name wins
