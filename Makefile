# The two commands: `make run` (hub + demo on the embedded file store) and `make test` (everything CI runs).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean conformance

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/resumable-hub serve --demo

lint: $(STAMP)
	$(BIN)/ruff check hub storage tests bench
	$(BIN)/ruff format --check hub storage tests bench
	$(BIN)/mypy

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

conformance: $(STAMP)
	cd tests/conformance && npm ci --no-audit --no-fund
	$(BIN)/python tests/conformance/run.py

bench: $(STAMP)
	$(BIN)/python -m bench.storage --quick

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
