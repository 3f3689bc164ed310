# The two entry points of the README: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

TOOLS := .tools
ANVIL_VERSION := 1.7.1
ANVIL_STAMP := $(TOOLS)/.anvil-$(ANVIL_VERSION).stamp

.PHONY: install system-deps tools test-tools demo test lint typecheck bench down clean

$(STAMP): pyproject.toml
	@echo ">> creating $(VENV) and installing the project (pinned dependencies)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -c "import dagster, dagster_webserver, dagster_graphql, dagster_k8s, dagster_postgres, dagster_aws"
	@touch $(STAMP)

# bubblewrap isolates every stage of a job in the embedded default.
system-deps:
	@command -v bwrap >/dev/null 2>&1 || { echo ">> installing bubblewrap"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq bubblewrap >/dev/null; }

# anvil (the local chain of the dev stack and the tests) from npm, pinned, into a project-local folder.
# The native binary arrives as an optional dependency: never install with --omit=optional.
$(ANVIL_STAMP):
	@command -v npm >/dev/null 2>&1 || { echo "npm (Node.js >= 18) is needed to install anvil"; exit 1; }
	@echo ">> installing anvil $(ANVIL_VERSION) into $(TOOLS)"
	npm install --prefix $(TOOLS) --save-exact --include=optional --no-audit --no-fund --loglevel=error @foundry-rs/anvil@$(ANVIL_VERSION)
	@ls $(TOOLS)/node_modules/@foundry-rs/anvil-*/bin/anvil >/dev/null 2>&1 || { echo "anvil's native binary is missing from $(TOOLS)"; exit 1; }
	@touch $@

# A real IPFS node for the IPFS result store tests (js-ipfs with the kubo RPC API), pinned by its lockfile.
IPFS_NODE := tests/ipfs_node
IPFS_STAMP := $(IPFS_NODE)/node_modules/.installed-stamp
$(IPFS_STAMP): $(IPFS_NODE)/package-lock.json
	@echo ">> installing the test IPFS node into $(IPFS_NODE)"
	npm ci --prefix $(IPFS_NODE) --no-audit --no-fund --loglevel=error
	@touch $@

tools: $(ANVIL_STAMP)

# Only the tests need the IPFS node; `make demo` does not install it.
test-tools: $(IPFS_STAMP)

install: $(STAMP) system-deps tools

demo: install
	$(BIN)/c2d dev demo

test: install test-tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy c2d_core c2d_defs c2d_cli provider_api
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy c2d_core c2d_defs c2d_cli provider_api

bench: install
	$(BIN)/python bench/job_overhead.py
	$(BIN)/python bench/provider_api.py
	$(BIN)/python bench/staging.py
	$(BIN)/python bench/load.py

down:
	$(BIN)/c2d dev down

clean: down
	rm -rf .c2d
