# Every target bootstraps the local virtualenv itself: on a fresh machine
# `make run` and `make test` are the only set-up commands.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export PYTHONASYNCIODEBUG ?= 1

.PHONY: run test lint typecheck pytest soak bench docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

run: $(STAMP)
	PYTHONASYNCIODEBUG= $(BIN)/python -m example_api serve --debug --host 127.0.0.1 --seed-if-empty 50

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The trees are listed in pyproject.toml ([tool.mypy] files): gqlbatch, example_api, tests, benchmarks.
typecheck: $(STAMP)
	$(BIN)/mypy --strict

# Under coverage (branches, gqlbatch/ only); the report fails below [tool.coverage.report] fail_under.
pytest: $(STAMP)
	$(BIN)/python -W error -m coverage run -m pytest
	$(BIN)/python -m coverage report

test: lint typecheck pytest

# The soak that `make test` runs for 20 s, for GQLBATCH_SOAK_SECONDS (default 300).
GQLBATCH_SOAK_SECONDS ?= 300
soak: $(STAMP)
	GQLBATCH_SOAK_SECONDS=$(GQLBATCH_SOAK_SECONDS) $(BIN)/python -W error -m pytest -m soak -p no:cacheprovider -s

# Every benchmark, full size (about 10 minutes on 2 cores); writes docs/benchmarks.md and
# docs/img/bench-*.png. PostgreSQL: a private database on GQLBATCH_PG_ADMIN_URL's server.
bench: $(STAMP)
	PYTHONASYNCIODEBUG= $(BIN)/python -m benchmarks --report docs/benchmarks.md

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .coverage site data
