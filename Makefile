# The README's commands. Everything installs into .venv; nothing needs to be there beforehand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-fast lint screenshots ui install spark java browser postgres bench dg-check clean

$(BIN)/activation: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

## The dbt manifest of the bundled fact models, prepared here so that loading the code location reads a
## file instead of running dbt (activation_assets parses again only when a model is newer than it).
DBT_MANIFEST := dbt_project/target/manifest.json
$(DBT_MANIFEST): $(BIN)/activation dbt_project/dbt_project.yml $(wildcard dbt_project/models/*/*)
	cd dbt_project && ../$(BIN)/dbt parse --quiet --profiles-dir .

install: $(BIN)/activation $(DBT_MANIFEST)

## PySpark and dagster-pyspark, for `warehouse: {spark: ...}` and the Spark tests (not needed for DuckDB;
## sqlglot, which renders the SQL for Spark, is a core dependency).
$(VENV)/.spark: $(BIN)/activation
	$(BIN)/python -m pip install --quiet -e ".[dev,spark]"
	@touch $@

spark: $(VENV)/.spark java

## A production instance on Postgres (docs/production.md): dagster-postgres, and Debian's postgresql for
## the tests, which start a throwaway cluster of their own.
$(VENV)/.postgres: $(BIN)/activation
	$(BIN)/python -m pip install --quiet -e ".[dev,postgres]"
	@touch $@

postgres: $(VENV)/.postgres
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }

## Spark 4 runs on Java 17 or newer.
java:
	@command -v java >/dev/null || { apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null; }

## The first command: install, generate the sample data, materialize every behavior, grain and partition
## (dbt builds the fact models first), and write the HTML report.
demo: install
	$(BIN)/activation sample-data
	$(BIN)/activation materialize
	$(BIN)/activation report

## The second command: the whole test suite (slow, Spark, UI and browser tests included), as CI runs it.
## Two workers, each taking whole modules (module fixtures are built once): the UI tests mostly wait on
## Dagster's daemon, so the CPU-bound modules run beside them.
TEST_WORKERS ?= 2
test: install spark browser postgres lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

## Debian's Chromium for the browser tests (Playwright drives it; it downloads no browser of its own).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

## The layers' import rules (docs/development.md) and pyflakes, over the package.
lint: install
	$(BIN)/ruff check

test-fast: install lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow and not ui and not spark"

## The docs' screenshots (docs/img/), of the demo: run `make demo` first.
screenshots: install browser
	$(BIN)/python scripts/screenshots.py

## The Dagster UI (dagster dev) on the project-local instance, at http://localhost:3000
ui: install
	$(BIN)/activation ui

## The benchmark harness (2M users x 180 days by default; see docs/benchmarks/harness.md). Not part of CI.
bench: install
	$(BIN)/python -m benchmarks

## The layer as a Component: the definitions `dg` loads from activation_assets/defs/.
dg-check: install
	$(BIN)/dg check defs

clean:
	rm -rf dbt_project/target dbt_project/logs data/raw data/*.duckdb data/*.duckdb.wal data/*.lock data/spark-warehouse .dagster_home .dagster_home-spark
