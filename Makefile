# The two commands (see README):
#   make search   - set up, then run the quickstart study and print its Pareto front
#   make test     - set up, then run the whole test suite
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: test search setup lint lint-imports clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "need Python 3.11+ on PATH (or: make PY=/path/to/python3.11 ...)"; exit 1; }
	@test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -ra tests

search: $(STAMP)
	$(VENV)/bin/nas search studies/quickstart.toml

# the layers operators <- search_space <- evaluators <- nas, no import cycles ([tool.importlinter])
lint-imports: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache

lint: $(STAMP)
	$(VENV)/bin/ruff check nas search_space operators evaluators tests benchmarks

clean:
	rm -rf $(VENV) *.egg-info
