# pyroflows developer commands. Each target bootstraps .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# CPU wheel pinned here (not in pyproject) so users elsewhere keep their own torch build.
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow lint format bench bench-install docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,plot,data]"  # plot, data: the demo and the tests need them
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pyroflows demo --out demo-output

test: $(STAMP)
	$(PY) -m pytest -q -n 2

test-slow: $(STAMP)
	$(PY) -m pytest -q -n 2 -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench-install: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]" "$(TORCH)"

bench: bench-install
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) demo-output .ruff_cache .pytest_cache
