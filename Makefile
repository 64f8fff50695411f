# Every target bootstraps its virtualenv itself: on a fresh machine `make run`
# and `make test` are the only set-up commands. `make run` installs only what
# the example needs (`.[example]`, in .venv-run); the other targets install the
# whole development set (`.[dev]`, in .venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_VENV ?= .venv-run
RUN_STAMP := $(RUN_VENV)/.installed

# `make run PORT=9000 DATABASE_URL=postgresql://...`: both optional (make passes
# command-line variables on to the server, which reads DATABASE_URL).
PORT ?= $(or $(EXAMPLE_API_PORT),8000)

export PYTHONASYNCIODEBUG ?= 1

.PHONY: run test lint typecheck pytest soak bench docs clean vendor-graphiql screenshots

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

$(RUN_STAMP): pyproject.toml
	test -x $(RUN_VENV)/bin/python || $(PYTHON) -m venv $(RUN_VENV)
	$(RUN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(RUN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[example]'
	touch $@

run: $(RUN_STAMP)
	PYTHONASYNCIODEBUG= $(RUN_VENV)/bin/python -m example_api serve --debug --host 127.0.0.1 \
		--port $(PORT) --seed-if-empty 50

# Fetch GraphiQL's files again from the npm registry (after a Strawberry upgrade); commit them.
vendor-graphiql: $(STAMP)
	$(BIN)/python scripts/vendor_graphiql.py

# Regenerate docs/img/graphiql*.png with the real-browser test (needs /usr/bin/chromium).
screenshots: $(STAMP)
	GQLBATCH_SCREENSHOT_DIR=docs/img $(BIN)/python -W error -m pytest -p no:cacheprovider \
		-q tests/example_api/test_example_api_browser.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The trees are listed in pyproject.toml ([tool.mypy] files): gqlbatch, example_api, tests,
# benchmarks, scripts.
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

# Every benchmark, full size (about 17 minutes on 2 cores); writes docs/benchmarks.md and
# docs/img/bench-*.png. PostgreSQL: a private database on GQLBATCH_PG_ADMIN_URL's server.
bench: $(STAMP)
	PYTHONASYNCIODEBUG= $(BIN)/python -m benchmarks --report docs/benchmarks.md

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) $(RUN_VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .coverage site data
