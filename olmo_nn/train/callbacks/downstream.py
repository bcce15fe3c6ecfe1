"""In-loop downstream evaluation: a small, fixed subset of tasks through ``olmo eval``'s code.

Every ``eval.interval`` steps (and at the last step) the model scores ``eval.downstream_limit``
examples of each task in ``eval.downstream_tasks`` (sampled once, OLMo's seed 1234) with
:func:`olmo_nn.eval.downstream.evaluate_spec`; ``eval/downstream/<task>/acc`` and the
per-normalization accuracies (and ``/f1`` for a task OLMo reports by F1: MRPC) join the
step's metrics, so metrics.jsonl and the MLflow run
(written by rank 0) get them. A generative task (``nq_open``, ``triviaqa``,
``basic_arithmetic``) is decoded greedily with
:func:`olmo_nn.eval.generative.evaluate_generative_task` (its default shots) and adds
``eval/downstream/<task>/exact_match`` (and ``/f1``).

Then the group scores, as ``olmo eval downstream`` writes them: MMLU's averages over the
subjects scored (:func:`olmo_nn.eval.mmlu.aggregate_rows`: ``eval/downstream/mmlu/acc``,
``mmlu_<category>/acc``, ``mmlu/acc_categories``, each ``acc_<normalization>`` too, per
format: ``mmlu:mc/acc``), and the score of each suite that ``eval.downstream_tasks`` names
(:func:`olmo_nn.eval.suites.suite_rows`: ``eval/downstream/olmes/acc``, the mean of its
tasks' ``acc``, MMLU once).

Under FSDP every rank scores the same requests in the same batches: each forward pass
all-gathers the sharded parameters, so every rank must run it (greedy decoding too: every
rank computes the same tokens, so every rank runs the same number of steps). The subset is small, so the
duplicated work is a few forward passes per task; every rank ends with the same accuracies.

Texts are tokenized with the tokenizer that the training shards were built with, as their
manifest names it (OLMo's when it names none).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from olmo_nn.train.callbacks.base import Callback

if TYPE_CHECKING:
    from olmo_nn.data.shards import TokenShards
    from olmo_nn.eval.task_spec import TaskSpec
    from olmo_nn.tokenizer import Tokenizer
    from olmo_nn.train.trainer import Trainer

__all__ = ["DownstreamEval", "group_metrics", "shard_tokenizer"]


def shard_tokenizer(
    shards: TokenShards, *, eos_token_id: int | None = None, pad_token_id: int | None = None
) -> Tokenizer:
    """The tokenizer that ``shards`` were built with, by the name in their manifest.

    A manifest that names no tokenizer gets OLMo's (with a warning if its recorded fingerprint
    differs). Raises ``FileNotFoundError`` when the named tokenizer cannot be found and
    ``ValueError`` when the file found under that name is not the one the shards recorded.
    """
    from olmo_nn.tokenizer import Tokenizer

    name = shards.tokenizer_name
    if not name:
        tokenizer = Tokenizer.from_name_or_path(
            eos_token_id=eos_token_id, pad_token_id=pad_token_id
        )
        recorded = shards.tokenizer_fingerprint
        if recorded and recorded != tokenizer.fingerprint:
            warnings.warn(
                f"token shards in {shards.directory} name no tokenizer and record a fingerprint "
                f"({recorded[:12]}) that is not OLMo's; downstream evaluation uses OLMo's",
                stacklevel=2,
            )
        return tokenizer
    try:
        tokenizer = Tokenizer.from_name_or_path(
            name, eos_token_id=eos_token_id, pad_token_id=pad_token_id
        )
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"in-loop downstream evaluation tokenizes with the tokenizer the training shards "
            f"in {shards.directory} were built with, {name!r}, which is not found ({error}); "
            "run from the folder the shards were made in, or set eval.downstream_tasks=[]"
        ) from error
    shards.check_tokenizer(tokenizer)
    return tokenizer


@dataclass(frozen=True)
class _Task:
    name: str
    instances: list[Any]
    spec: TaskSpec | None
    """None for a generative task (its instances are prompts)."""


class DownstreamEval(Callback):
    def __init__(self) -> None:
        self._tasks: list[_Task] = []
        self._suites: list[str] = []
        """The suites ``eval.downstream_tasks`` names (but ``mmlu``: its averages are MMLU's
        own), scored from their tasks at each evaluation."""
        self._tokenizer: Tokenizer | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        from olmo_nn.eval.generative import generative_spec, load_generative_task
        from olmo_nn.eval.suites import is_suite
        from olmo_nn.eval.tasks import expand_task_names, get_task_spec, load_task

        config = trainer.config
        # Loaded once, not at every evaluation; every folder of data.paths has this tokenizer.
        self._tokenizer = shard_tokenizer(
            trainer.data.datasets[0].shards,
            eos_token_id=config.model.eos_token_id,
            pad_token_id=config.model.pad_token_id,
        )
        names = config.eval.downstream_tasks
        # expand_task_names forgets which suites were asked for; their scores need them.
        self._suites = [n for n in names if is_suite(n) and n.partition(":")[0] != "mmlu"]
        self._tasks = []
        for name in expand_task_names(names):
            if generative_spec(name) is not None:
                prompts = load_generative_task(name, limit=config.eval.downstream_limit)
                self._tasks.append(_Task(name, prompts, None))
                continue
            spec = get_task_spec(name)
            instances = load_task(name, limit=config.eval.downstream_limit)
            self._tasks.append(_Task(name, instances, spec))

    def needs_model_at(self, trainer: Trainer, step: int) -> bool:
        interval = trainer.config.eval.interval
        return bool(interval) and (step % interval == 0 or step == trainer.config.max_steps)

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        step = metrics["step"]
        if not self._tasks or self._tokenizer is None or not self.needs_model_at(trainer, step):
            return
        assert trainer.step == step, "the trainer flushes at evaluation steps"
        from olmo_nn.eval.downstream import evaluate_spec
        from olmo_nn.eval.generative import evaluate_generative_task
        from olmo_nn.eval.models import LanguageModel

        model = trainer.model
        was_training = model.training
        wrapped = LanguageModel(  # puts the model in eval mode
            model,
            self._tokenizer,
            name=trainer.config.run_name,
            max_length=trainer.config.model.max_sequence_length,
            vocab_size=trainer.config.model.padded_vocab_size,
        )
        rows: list[dict[str, Any]] = []
        with torch.no_grad(), trainer.autocast():
            for task in self._tasks:
                if task.spec is None:
                    generated = evaluate_generative_task(wrapped, task.name, task.instances)
                    for metric, value in generated.scores.items():
                        metrics[f"eval/downstream/{task.name}/{metric}"] = value
                    continue
                result = evaluate_spec(wrapped, task.spec, task.instances)
                if result.f1 is not None:
                    metrics[f"eval/downstream/{task.name}/f1"] = result.f1
                metrics[f"eval/downstream/{task.name}/acc"] = result.accuracy[
                    task.spec.default_normalization
                ]
                for kind, value in result.accuracy.items():
                    metrics[f"eval/downstream/{task.name}/acc_{kind}"] = value
                rows += result.rows(model=trainer.config.run_name, step=step)
        model.train(was_training)
        metrics.update(group_metrics(rows, self._suites))


def group_metrics(rows: list[dict[str, Any]], suites: list[str]) -> dict[str, float]:
    """``eval/downstream/<name>/<metric>`` for MMLU's averages over the subject rows among
    ``rows`` (``TaskResult.rows``) and for each of ``suites`` all of whose tasks are there;
    their ``subjects`` and ``tasks`` counts are left out."""
    from olmo_nn.eval.mmlu import aggregate_rows
    from olmo_nn.eval.suites import suite_rows

    groups = aggregate_rows(rows)
    groups += suite_rows(rows + groups, suites)
    return {
        f"eval/downstream/{r['task']}/{r['metric']}": float(r["value"])
        for r in groups
        if r["metric"] not in ("subjects", "tasks")
    }
