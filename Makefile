# The two commands: `make demo` and `make test`. Both install what is missing first
# (a virtualenv with the Python packages; Kafka's jars are fetched by Maven on first start;
# `make test` also installs Debian's PostgreSQL server when it is missing, for the CDC tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The package laid out as it installs (setup.py maps the top-level folders into caselink.*), for
# import-linter and mypy, which do not follow the editable install's import hook.
TREE := $(BIN)/python tools/package_tree.py build/package-tree --

.PHONY: demo test unit lint install bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/caselink demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(TREE) lint-imports --no-cache $(CURDIR)/pyproject.toml  # the layers (pyproject: tool.importlinter)
	$(TREE) mypy --config-file $(CURDIR)/pyproject.toml --cache-dir $(CURDIR)/.mypy_cache caselink

# Everything, at CI depth: the property tests at their full example counts, the wheel test
# (tests/packaging: build, install into a fresh virtualenv, run), integration against a real broker.
test: lint
	bash infra/ensure-postgres.sh
	bash infra/ensure-chromium.sh
	CASELINK_HYPOTHESIS=ci $(BIN)/pytest

# Fast feedback: the unit tests with the quick Hypothesis profile (tests/depth.py), less those
# marked slow (make test runs them).
unit: $(STAMP)
	CASELINK_HYPOTHESIS=dev $(BIN)/pytest tests/unit -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache
