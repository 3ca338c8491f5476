# Two commands on a fresh machine: `make run` and `make test`.
# TORCH selects the torch requirement installed before everything else; the default is the CPU
# build found on these machines. GPU users: make run TORCH="torch==2.13.0 --index-url <your CUDA index>"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
RECIPE ?= recipes/quickstart.yaml
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

run: setup
	$(BIN)/driver run $(RECIPE) --overwrite

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/batch_eval.py
	$(BIN)/python bench/task_batching.py

lint: setup
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check driver tests

clean:
	rm -rf $(VENV) runs .pytest_cache
