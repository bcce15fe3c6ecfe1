# The two commands: `make demo` and `make test`. Each creates or updates .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# DVC lives in its own environment (its hydra pins an antlr runtime Dagster cannot use);
# its `dvc` is put on PATH for every target, so `make` commands and Dagster find it.
DVC_VENV := .venv-dvc
DVC_STAMP := $(DVC_VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(CURDIR)/$(DVC_VENV)/bin:$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
# Dagster's persistent instance (SQLite, telemetry off) lives in the repository.
export DAGSTER_HOME := $(CURDIR)/.dagster
UI_HOST ?= 127.0.0.1
UI_PORT ?= 3000
MLFLOW_PORT ?= 5000

.PHONY: install demo test lint format ui mlflow-ui bench-tokenizer bench-train bench-curation bench-eval clean-venv

install: $(STAMP) $(DVC_STAMP)

$(DVC_STAMP): requirements/dvc.txt
	test -x $(DVC_VENV)/bin/python || $(PYTHON) -m venv $(DVC_VENV)
	$(DVC_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DVC_VENV)/bin/python -m pip install --quiet -r requirements/dvc.txt
	touch $(DVC_STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt scripts/install_torch.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	scripts/install_torch.sh $(BIN)/python
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/python scripts/demo.py

test: lint
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench-tokenizer: install
	$(BIN)/python benchmarks/tokenizer_throughput.py

bench-train: install
	$(BIN)/python benchmarks/train_throughput.py

bench-curation: install
	$(BIN)/python benchmarks/curation_throughput.py

bench-eval: install
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e '.[bench]'
	$(BIN)/python benchmarks/eval_throughput.py

# The Dagster UI on the repository's persistent instance (.dagster/), loopback only.
ui: install
	$(BIN)/dagster dev -w workspace.yaml -h $(UI_HOST) -p $(UI_PORT)

# MLflow's UI on the lab's tracking store (.mlflow/mlflow.db unless MLFLOW_TRACKING_URI).
mlflow-ui: install
	mkdir -p .mlflow
	$(BIN)/mlflow ui --host $(UI_HOST) --port $(MLFLOW_PORT) \
		--backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/.mlflow/mlflow.db}"

clean-venv:
	rm -rf $(VENV) $(DVC_VENV)
