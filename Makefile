# The two commands: `make demo` and `make test`. Each creates or updates .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1

.PHONY: install demo test lint format bench-tokenizer bench-train bench-curation bench-eval clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt scripts/install_torch.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	scripts/install_torch.sh $(BIN)/python
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/python scripts/demo.py --output demo_out

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

clean-venv:
	rm -rf $(VENV)
