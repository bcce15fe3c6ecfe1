"""The pipeline's steps, a module per kind of stage: curation, tokenization, training,
checkpoints, evaluation, reports. A step reads its inputs and parameters from the
:class:`~olmo_assets.lab.params.Lab`, writes its declared folders (complete or not at all)
and returns a :class:`~olmo_assets.lab.steps.results.StepResult`; a check re-reads what a
step wrote and returns a :class:`~olmo_assets.lab.steps.results.CheckResult`. What each step
reads and writes is declared in :mod:`olmo_assets.lab.pipeline`; nothing here imports
Dagster or DVC."""
