# llmmesh developer commands (`make help` lists them). Every target installs what it needs first.
SHELL := /bin/bash
# The interpreter .venv is made with (3.11 to 3.13): make setup PYTHON=python3.12
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
# SDK versions whose behaviour docs/sdk-notes.md was checked against.
SDK_PINS := -P openai==3.51.0 -P anthropic==2.10.0 -P google-genai==3.3.0
export UV_PYTHON_DOWNLOADS := never
# Some environments set PYTHONDONTWRITEBYTECODE=1; then every interpreter the targets start compiles its
# imports from source (about 4 CPU-s for a router or adapter, against 1.3 s from .pyc). The image keeps it.
unexport PYTHONDONTWRITEBYTECODE
SUPPORTED_PYTHON := import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 14))
.DEFAULT_GOAL := help

.PHONY: help setup venv-check run test monitoring-tools node-clients litellm-venv fuzz-engine k8s-check lint proto proto-check docs lock bench clean

help:  ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:[^#]*## /\t/' | expand -t 14

$(BIN)/uv:
	@$(PYTHON) -c '$(SUPPORTED_PYTHON)' || { echo "make: $(PYTHON) is not Python 3.11 to 3.13; choose one: make setup PYTHON=python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)

# An existing .venv made with another Python (or whose Python is gone) is refused, not reused.
venv-check:
	@if [ -d $(VENV) ] && ! $(BIN)/python -c '$(SUPPORTED_PYTHON)' 2>/dev/null; then \
		echo "make: $(VENV) was not made with Python 3.11 to 3.13, or its Python is gone: run make clean, then make setup (PYTHON=python3.11 to choose)" >&2; exit 1; fi

# Reinstalls whenever the lock or the package metadata changes.
$(VENV)/.installed: requirements.lock pyproject.toml | venv-check $(BIN)/uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

setup: venv-check $(VENV)/.installed  ## Local virtualenv (.venv) with the locked dependencies; PYTHON= picks the interpreter

lock: | $(BIN)/uv  ## Re-resolve requirements.lock from pyproject.toml
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --quiet \
		--custom-compile-command "make lock" $(SDK_PINS) -o requirements.lock

run: setup  ## Start the local mesh, send a demo request through it, stop it
	$(BIN)/llmmesh demo

# Two workers, one test file each at a time (tests/conftest.py's scheduler makes the units): module fixtures
# stay shared within a file, and the production-shaped suite's files (tests/production/) share one mesh on one worker.
TEST_WORKERS ?= 2

test: setup $(BUF) monitoring-tools node-clients litellm-venv k8s-check  ## The whole test suite on TEST_WORKERS processes (after the deployment check)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

# The alert and dashboard tests run Debian's prometheus and promtool (tests/deploy/test_monitoring*.py): installed
# with apt-get when absent and run as root; otherwise a warning, and those tests skip (fail when CI is set).
monitoring-tools:  ## Install prometheus and promtool (Debian package `prometheus`) when absent and root
	@if ! command -v promtool >/dev/null 2>&1 && [ ! -x /usr/bin/promtool ]; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
				|| echo "warning: could not install prometheus; the monitoring tests will be skipped" >&2; \
		else echo "warning: prometheus/promtool not found and cannot be installed here (apt-get install prometheus); the monitoring tests will be skipped" >&2; fi; \
	fi

# The npm `openai` client tests (tests/router/test_node_openai_client.py) drive each major from its own
# lockfile, which also pins the Node.js that major supports (registry packages node-linux-*), into
# git-ignored node_modules; reinstalled when a lockfile changes. Without npm: a warning, and those tests
# skip (fail when CI is set).
NODE_CLIENTS := $(patsubst %/package-lock.json,%/node_modules/.installed,$(wildcard tests/clients/node/*/package-lock.json))

node-clients: $(NODE_CLIENTS)  ## Install the npm openai clients (majors 6 and 7) the client tests drive: npm ci

tests/clients/node/%/node_modules/.installed: tests/clients/node/%/package-lock.json tests/clients/node/%/package.json
	@if command -v npm >/dev/null 2>&1; then \
		echo "npm ci in tests/clients/node/$*"; \
		npm ci --prefix tests/clients/node/$* --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "warning: npm not found (apt-get install nodejs npm); the npm openai client tests will be skipped" >&2; fi

# LiteLLM (a client the door is tested with, and the bench's comparison) has pins that conflict with ours, so it lives
# in its own pinned venv, .tools/litellm-venv (services/testing/litellm_venv.py; about 10 s cold with uv). Without an
# index: a warning, and tests/router/test_litellm_client.py skips (fails when CI is set).
litellm-venv: setup  ## The pinned LiteLLM venv (.tools/litellm-venv) for the LiteLLM client tests and make bench
	@$(BIN)/python -m services.testing.litellm_venv

# `make test` runs 80 schedules of the engine's model-based test; this runs many more (a new seed range: SEED=).
fuzz-engine: setup  ## The router engine's model-based test at length: SCHEDULES=400 (default), SEED=1500
	LLMMESH_ENGINE_SCHEDULES=$(or $(SCHEDULES),400) LLMMESH_ENGINE_SEED=$(or $(SEED),1500) \
		$(BIN)/pytest -q -s tests/router/test_engine_model.py

# kubectl (kustomize), hadolint and the Kubernetes schemas are pinned wheels in
# .venv (make setup), so this needs no cluster, no Docker and no network.
k8s-check: setup  ## Render deploy/k8s overlays; schemas, invariants, env vars vs code and docs/settings.md; Dockerfile
	$(BIN)/python -m services.deploy.k8s_check

# The contract as last generated (a buf image): every change is checked against it by `buf breaking` before
# the stubs are regenerated, and tests/contracts/test_compatibility.py fails when it is stale or broken against.
# Breaking llmmesh.v1 on purpose means deleting this file in a reviewed commit.
CONTRACT_IMAGE := gen/llmmesh.binpb

proto: setup $(BUF)  ## Check protos/ against the last contract (buf breaking), regenerate gen/llmmesh and the image
	@if [ -f $(CONTRACT_IMAGE) ]; then $(BUF) breaking --against $(CONTRACT_IMAGE) \
		|| { echo "make: the change above breaks llmmesh.v1 for existing callers; add a field or message instead" >&2; exit 1; }; fi
	rm -f gen/llmmesh/v1/*_pb2*.py gen/llmmesh/v1/*_pb2*.pyi
	$(BIN)/python -m grpc_tools.protoc -I protos --python_out=gen --pyi_out=gen --grpc_python_out=gen \
		$$(find protos -name '*.proto' | sort)
	$(BUF) build --exclude-source-info -o $(CONTRACT_IMAGE)

proto-check: setup  ## Fail when gen/llmmesh is stale against protos/ (make proto fixes it)
	$(BIN)/pytest -q tests/contracts/test_generated_code.py

docs: setup  ## Regenerate docs/settings.md from the settings classes (k8s-check fails when it is stale)
	$(BIN)/python -m services.deploy.settings_doc --write

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

lint: setup $(BUF)  ## buf lint, ruff, mypy (buf comes from npm: needs node and npm)
	$(BUF) lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup litellm-venv  ## Benchmarks (ratios measured side by side); ARGS=--quick for a short run
	$(BIN)/python -m tests.bench $(ARGS)

clean:  ## Remove .venv, the tool caches and the node clients (then make setup starts over)
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache .mypy_cache tests/clients/node/*/node_modules
