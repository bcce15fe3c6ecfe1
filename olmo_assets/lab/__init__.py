"""The lab pipeline: parameters (params.yaml) and one step per artifact; no Dagster, no DVC."""
