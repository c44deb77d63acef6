# The two commands: `make run` (hub + demo on the embedded file store) and `make test` (everything CI runs).
# `make test` needs only Python >= 3.11, node/npm and the system packages .ci/run installs: it creates the
# venv and installs every npm fixture the tests load (each pinned by its package-lock.json) by itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every npm fixture the test suite loads; tests/ops/test_make.py checks no package-lock.json is missing.
NPM_FIXTURES := tests/browser/react-fixture tests/conformance tests/browser/aisdk-fixture bench/peers_node
FIXTURE_STAMPS := $(addsuffix /node_modules/.installed,$(NPM_FIXTURES))
ARGS ?=

.PHONY: run test lint fixtures bench clean conformance

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# `npm ci` wipes node_modules first, so the stamp inside it is only there after a complete install.
%/node_modules/.installed: %/package-lock.json %/package.json
	cd $* && npm ci --no-audit --no-fund
	touch $@

fixtures: $(FIXTURE_STAMPS)

# Extra flags after the demo's: `make run ARGS="--port 0 --data-dir /tmp/hub --fsync always"`.
run: $(STAMP)
	$(BIN)/resumable-hub serve --demo $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check hub storage tests bench examples
	$(BIN)/ruff format --check hub storage tests bench examples
	$(BIN)/mypy

test: $(STAMP) $(FIXTURE_STAMPS) lint
	$(BIN)/python -m pytest -q $(ARGS)

conformance: $(STAMP) tests/conformance/node_modules/.installed
	$(BIN)/python tests/conformance/run.py $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.storage --quick

# Never the data dir (./data by default): streams are user data, not a build product.
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis $(addsuffix /node_modules,$(NPM_FIXTURES))
