# Every target creates .venv and fetches anvil on first use; later runs reuse them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TOOLS := .tools
ANVIL_VERSION := 1.7.1
ANVIL := $(TOOLS)/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
PYTEST_ARGS ?=
SOAK_ARGS ?=

.PHONY: setup test test-unit test-integration test-e2e demo bench soak lint clean

setup: $(STAMP) $(ANVIL)
	@$(PY) -m compileall -q src  # cached bytecode: commands start without compiling ampd

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

$(ANVIL):
	@mkdir -p $(TOOLS)
	npm install --silent --no-audit --no-fund --no-package-lock --prefix $(TOOLS) \
		@foundry-rs/anvil-linux-amd64@$(ANVIL_VERSION) @foundry-rs/cast-linux-amd64@$(ANVIL_VERSION)
	@test -x $(ANVIL)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS) tests

test-unit: setup
	$(PY) -m pytest $(PYTEST_ARGS) tests/unit

test-integration: setup
	$(PY) -m pytest $(PYTEST_ARGS) tests/integration

test-e2e: setup
	$(PY) -m pytest $(PYTEST_ARGS) tests/e2e

demo: setup
	$(PY) scripts/demo.py

bench: setup
	$(PY) bench/run.py --repeat 3

soak: setup
	$(PY) bench/soak.py $(SOAK_ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/ruff format --check src tests bench scripts

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .ruff_cache
