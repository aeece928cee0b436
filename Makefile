# The two set-up commands for a fresh machine: `make up` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up test install install-test lint unit bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	bash scripts/install-system-deps.sh

## make up: install what is needed, then run the embedded cloud
up: install
	$(BIN)/vimha up

## make test: install what is needed, then run the whole suite (lint, types, layers, tests)
test: install-test lint
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint:
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	$(BIN)/python bench/fm_notify.py

clean:
	rm -rf $(VENV) .vimha build *.egg-info
