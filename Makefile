# squeezeflow: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.squeezeflow-installed
# torch is pinned for the setup commands (a CPU build); the package itself declares a range.
TORCH_PIN := torch==2.13.0
DEMO_DIR := .squeezeflow/demo

.PHONY: venv demo test lint typecheck unit integration clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or set PYTHON=...)"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip 2>&1 | grep -v 'is ignored' || true
	set -o pipefail; $(PIP) install -q $(TORCH_PIN) 2>&1 | { grep -v 'is ignored' || true; }
	set -o pipefail; $(PIP) install -q -e '.[dev]' $(TORCH_PIN) 2>&1 | { grep -v 'is ignored' || true; }
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m squeezeflow.demo --workdir $(DEMO_DIR)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit

test: lint typecheck
	$(VENV)/bin/pytest -q -ra --durations=15 tests

clean:
	rm -rf $(VENV) .squeezeflow .pytest_cache .mypy_cache .ruff_cache
