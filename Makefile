# llmmesh developer commands. Every target installs what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
BUF_VERSION := 1.75.0
# SDK versions whose behaviour ../shared/SDK-NOTES.md was checked against.
SDK_PINS := -P openai==3.51.0 -P anthropic==2.10.0 -P google-genai==3.3.0
export UV_PYTHON_DOWNLOADS := never

.PHONY: setup run test k8s-check lint proto proto-check lock bench clean

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)

# Reinstalls whenever the lock or the package metadata changes.
$(VENV)/.installed: requirements.lock pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

setup: $(VENV)/.installed  ## Local virtualenv with the locked dependencies

lock: | $(BIN)/uv  ## Re-resolve requirements.lock from pyproject.toml
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --quiet \
		--custom-compile-command "make lock" $(SDK_PINS) -o requirements.lock

run: setup  ## Start the local mesh, send a demo request through it, stop it
	$(BIN)/llmmesh demo

test: setup k8s-check  ## The whole test suite (after the deployment check)
	$(BIN)/pytest

# kubectl (kustomize), hadolint and the Kubernetes schemas are pinned wheels in
# .venv (make setup), so this needs no cluster, no Docker and no network.
k8s-check: setup  ## Render deploy/k8s overlays; schemas, invariants, env vars vs code; Dockerfile
	$(BIN)/python -m services.deploy.k8s_check

proto: setup  ## Regenerate gen/llmmesh from protos/
	rm -f gen/llmmesh/v1/*_pb2*.py gen/llmmesh/v1/*_pb2*.pyi
	$(BIN)/python -m grpc_tools.protoc -I protos --python_out=gen --pyi_out=gen --grpc_python_out=gen \
		$$(find protos -name '*.proto' | sort)

.tools/node_modules/.bin/buf:
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

lint: setup .tools/node_modules/.bin/buf  ## buf lint, ruff, mypy
	.tools/node_modules/.bin/buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup  ## Benchmarks (ratios measured side by side)
	$(BIN)/python -m tests.bench

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache .mypy_cache
