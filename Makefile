# vae_lab — `make train` sets everything up and trains the default model; `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=
PYTEST_ARGS ?=
WORKERS ?= 2

.PHONY: install train test test-fast test-slow test-all benchmark docs docs-serve clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# constraints.txt pins every package (torch 2.14.1 / torchvision 0.29.1 included) for reproducible installs
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install vae_lab with pinned dependencies

train: $(STAMP)  ## train the default VAE on the bundled digits data (ARGS="key=value ..." to override)
	$(BIN)/python train.py $(ARGS)

test: $(STAMP)  ## the layering contracts (lint-imports) and the default test suite (no slow or GPU tests), 2 workers
	$(BIN)/lint-imports --no-cache
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(WORKERS) -m "not slow and not gpu" $(PYTEST_ARGS)

test-fast: $(STAMP)  ## the inner loop (~30 s): tests/unit/, the maths and the modules (no Trainer, no subprocess)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(WORKERS) -m "not slow and not gpu" $(PYTEST_ARGS) tests/unit

test-slow: $(STAMP)  ## the slow tests (real-data training runs), 2 workers
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(WORKERS) -m "slow and not gpu" $(PYTEST_ARGS)

test-all: $(STAMP)  ## every test (GPU tests skip themselves without a GPU)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

benchmark: $(STAMP)  ## throughput vs a hand-written loop (scripts/benchmark.py; ARGS to pass options)
	$(BIN)/python scripts/benchmark.py $(ARGS)

docs: $(STAMP)  ## build the docs site strictly into site/ (a broken link, anchor or docstring fails it)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site/

docs-serve: $(STAMP)  ## serve the docs on http://127.0.0.1:8000, rebuilt on every edit
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve -a 127.0.0.1:8000

clean:  ## remove the virtualenv and caches (keeps outputs/)
	rm -rf $(VENV) .pytest_cache build site *.egg-info
