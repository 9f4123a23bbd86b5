# pyroflows developer commands. Each target bootstraps .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# CPU wheel pinned here (not in pyproject) so users elsewhere keep their own torch build.
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: demo test test-slow lint format bench bench-install docs docs-install clean

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

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e ".[docs]"
	touch $(DOCS_STAMP)

# The site in docs/_build/html: API pages from __all__, the tutorials executed in smoke mode;
# any Sphinx warning or unresolved reference fails it (-W -n), read afresh every time (-E).
docs: $(DOCS_STAMP)
	$(PY) -m sphinx -b html -E -W --keep-going -n -q docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

# The docs extra, and Chromium for the browser test (tests/test_docs.py) where apt-get can.
docs-install: $(DOCS_STAMP)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "docs-install: no chromium; install it (Debian: apt-get install chromium) for tests/test_docs.py"; \
	fi

clean:
	rm -rf $(VENV) demo-output .ruff_cache .pytest_cache docs/_build docs/api docs/tutorials
