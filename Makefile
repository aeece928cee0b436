# The two set-up commands for a fresh machine: `make up` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up test install install-test lint unit bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The dashboard's assets come from the npm registry at install time (never from git).
install: $(BIN)/python
	$(BIN)/pip install -q -e .
	bash scripts/build-ui-assets.sh

# System packages first: pip builds the libvirt binding against libvirt-dev.
install-test: $(BIN)/python
	bash scripts/install-system-deps.sh
	$(BIN)/pip install -q -e '.[test]'
	bash scripts/build-ui-assets.sh

## make up: install what is needed, then run the embedded cloud
up: install
	$(BIN)/vimha up

## make test: install what is needed, then run the whole suite (lint, types, layers, tests;
## scripts/run-tests.sh: what runs in parallel and what not). `make test PYTEST_ARGS=...`
## runs pytest with those arguments instead.
test: install-test lint
	bash scripts/run-tests.sh $(PYTEST_ARGS)

lint:
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	$(BIN)/python bench/fm_notify.py

clean:
	rm -rf $(VENV) .vimha build *.egg-info
