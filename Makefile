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
# Where materializations link to (olmo_assets/lab/links.py): the UIs `make ui` serves.
export OLMO_DAGSTER_URL ?= http://$(UI_HOST):$(UI_PORT)
export OLMO_MLFLOW_URL ?= http://$(UI_HOST):$(MLFLOW_PORT)

.PHONY: install demo test browser slurm postgres lint format ui mlflow-ui bench bench-venv bench-table bench-tokenizer bench-train bench-curation bench-eval clean-venv

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

# Debian's Chromium for the browser test: installed with apt when run as root (as in CI), and
# then required (OLMO_REQUIRE_BROWSER), so the test runs there instead of skipping.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null || \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } || \
		echo "could not install Chromium: the browser test will skip"; \
	else echo "Chromium is not installed and this is not root with apt: the browser test will skip"; fi

# Debian's Slurm and munge for the local two-node cluster (tests/slurm_cluster.py): installed
# with apt when run as root, and then required (OLMO_REQUIRE_SLURM), as Chromium is.
slurm:
	@if [ -x /usr/sbin/slurmctld ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null || \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null; } || \
		echo "could not install slurm-wlm and munge: the Slurm tests will skip"; \
	else echo "Slurm is not installed and this is not root with apt: the Slurm tests will skip"; fi

# Debian's PostgreSQL server for the shared-state tests (tests/postgres_server.py starts one
# for the session): installed with apt when run as root, and then required
# (OLMO_REQUIRE_POSTGRES), as Chromium is.
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null || \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; } || \
		echo "could not install PostgreSQL: the PostgreSQL tests will skip"; \
	else echo "PostgreSQL is not installed and this is not root with apt: the PostgreSQL tests will skip"; fi

test: lint browser slurm postgres
	if [ -x /usr/bin/chromium ]; then export OLMO_REQUIRE_BROWSER=1; fi; \
	if [ -x /usr/sbin/slurmctld ]; then export OLMO_REQUIRE_SLURM=1; fi; \
	if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then export OLMO_REQUIRE_POSTGRES=1; fi; \
	$(BIN)/python -m pytest -q --durations=30 -n 2 --dist loadgroup --no-loadscope-reorder

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# `make bench`: every benchmark, ours against its peers in the same run on the same work
# (benchmarks/harness.py), each writing benchmarks/results/<name>.json, then the README's
# table regenerated from those files. The peers live in their own environments: .venv-bench
# (lm-evaluation-harness, datatrove, transformers, tokenizers) and .venv-dolma (the Dolma
# toolkit, whose pins conflict with theirs).
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
DOLMA_VENV := .venv-dolma
DOLMA_STAMP := $(DOLMA_VENV)/.installed

$(BENCH_STAMP): requirements/bench.txt scripts/install_torch.sh
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	scripts/install_torch.sh $(BENCH_VENV)/bin/python
	$(BENCH_VENV)/bin/python -m pip install --quiet -r requirements/bench.txt
	touch $(BENCH_STAMP)

$(DOLMA_STAMP): requirements/dolma.txt
	test -x $(DOLMA_VENV)/bin/python || $(PYTHON) -m venv $(DOLMA_VENV)
	$(DOLMA_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DOLMA_VENV)/bin/python -m pip install --quiet -r requirements/dolma.txt
	touch $(DOLMA_STAMP)

bench-venv: install $(BENCH_STAMP) $(DOLMA_STAMP)

bench: bench-venv
	$(BIN)/python benchmarks/eval_throughput.py
	$(BIN)/python benchmarks/curation_throughput.py
	$(BIN)/python benchmarks/tokenizer_throughput.py
	$(BIN)/python benchmarks/train_throughput.py --cpu
	$(BIN)/python benchmarks/table.py --write

bench-table: install
	$(BIN)/python benchmarks/table.py --write

bench-eval: bench-venv
	$(BIN)/python benchmarks/eval_throughput.py

bench-curation: bench-venv
	$(BIN)/python benchmarks/curation_throughput.py

bench-tokenizer: bench-venv
	$(BIN)/python benchmarks/tokenizer_throughput.py

bench-train: bench-venv
	$(BIN)/python benchmarks/train_throughput.py --cpu

# The Dagster UI (dagster dev: webserver and daemon) on the repository's persistent instance
# (.dagster/), with the MLflow UI beside it: it serves the plots the asset pages show.
# Both on PostgreSQL when OLMO_LAB_DATABASE_URL is set (olmo_assets/lab/database.py).
# Loopback only; both stop together. The store's URI goes through the environment, not the
# command line (`ps` shows a command line, password included).
ui: install
	mkdir -p .mlflow
	MLFLOW_BACKEND_STORE_URI="$$($(BIN)/python -m olmo_assets.lab.database mlflow-uri)" \
		$(BIN)/mlflow ui --host $(UI_HOST) --port $(MLFLOW_PORT) & \
	trap "kill $$! 2>/dev/null" EXIT INT TERM; \
	$(BIN)/python -m olmo_assets.lab.database exec \
		$(BIN)/dagster dev -w workspace.yaml -h $(UI_HOST) -p $(UI_PORT)

# MLflow's UI alone, on the lab's tracking store (MLFLOW_TRACKING_URI, else the schema mlflow
# of OLMO_LAB_DATABASE_URL, else .mlflow/mlflow.db).
mlflow-ui: install
	mkdir -p .mlflow
	MLFLOW_BACKEND_STORE_URI="$$($(BIN)/python -m olmo_assets.lab.database mlflow-uri)" \
		$(BIN)/mlflow ui --host $(UI_HOST) --port $(MLFLOW_PORT)

clean-venv:
	rm -rf $(VENV) $(DVC_VENV) $(BENCH_VENV) $(DOLMA_VENV)
