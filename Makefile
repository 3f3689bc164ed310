# The two entry points of the README: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps demo test lint typecheck bench down clean

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

install: $(STAMP) system-deps

demo: install
	$(BIN)/c2d dev demo

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy c2d_core c2d_defs c2d_cli
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy c2d_core c2d_defs c2d_cli

bench: install
	$(BIN)/python bench/job_overhead.py

down:
	$(BIN)/c2d dev down

clean: down
	rm -rf .c2d
