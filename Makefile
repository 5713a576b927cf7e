# fieldc2: `make demo` and `make test` work on a fresh machine with python3.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

## Plan the example incident, send orders to simulated teams, follow them live (Ctrl+C stops
## and writes the exports to fieldc2-demo/exports).
demo: $(STAMP)
	$(VENV)/bin/fieldc2 demo

## Lint, type-check and run the whole test suite.
test: $(STAMP) lint
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

## Fan-out benchmark (see docs/benchmarks.md).
bench: $(STAMP)
	$(VENV)/bin/python bench/fanout.py --clients 10 100 250 500

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
