# sfsync developer commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: help venv test demo emulator airflow airflow-celery lint chaos bench-emulator bench-pull bench-push bench-console clean distclean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

venv: $(STAMP) ## create .venv and install requirements.txt (again only when it changed)

$(STAMP): requirements.txt
	@if [ ! -x $(PY) ]; then \
		if [ -z "$(PYTHON)" ]; then echo "error: python3.11 (or python3) not found" >&2; exit 1; fi; \
		echo "Creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); \
	fi
	$(PY) -m pip install --disable-pip-version-check -r requirements.txt
	@touch $@

test: venv ## run the whole test suite (config in pyproject.toml)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: venv ## the emulator demo org through the real DAGs (dag.test, .airflow-demo): org summary, initial copy into SQLite, incremental cycles both ways
	$(PY) scripts/demo.py

emulator: venv ## run the Salesforce emulator in the foreground (EMULATOR_PORT, EMULATOR_DATA, EMULATOR_SEED)
	$(PY) -m include.salesforce_emulator

airflow: venv ## local Airflow on http://localhost:8080 (AIRFLOW_PORT; admin/admin), plus the emulator
	scripts/run_airflow.sh

airflow-celery: venv ## local CeleryExecutor deployment: Redis broker, PostgreSQL, two workers, the emulator (scripts/run_airflow_celery.sh)
	scripts/run_airflow_celery.sh

lint: venv ## ruff, the Airflow 3 migration rules on dags/ and plugins/, and the import layers (pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff check dags plugins --select AIR3
	PYTHONPATH=$(CURDIR):$(CURDIR)/plugins $(VENV)/bin/lint-imports --no-cache

chaos: venv ## chaos convergence: seeded two-sided runs with faults and killed cycles (SEEDS=5 SEED_START=1 BACKEND=both|sqlite|postgres; scripts/chaos.py)
	$(PY) scripts/chaos.py --seeds $(or $(SEEDS),5) --seed-start $(or $(SEED_START),1) --backend $(or $(BACKEND),both) $(CHAOS_ARGS)

bench-emulator: venv ## benchmark the emulator (scripts/bench_emulator.py)
	$(PY) scripts/bench_emulator.py

bench-pull: venv ## benchmark the pull sync on 200,000- and 1,000,000-record orgs: initial copy vs the machine's limits, incremental cycles, SQLite and PostgreSQL (scripts/bench_pull.py; BENCH_ARGS="--records 50000")
	$(PY) scripts/bench_pull.py $(BENCH_ARGS)

bench-push: venv ## benchmark the push sync: 10,000 person updates, 1,000 new people (scripts/bench_push.py; BENCH_ARGS="--backends sqlite,postgres")
	$(PY) scripts/bench_push.py $(BENCH_ARGS)

bench-console: venv ## benchmark the console's pages on 1,000,000 people, 100,000 errors, 30 days of runs, SQLite and PostgreSQL (scripts/bench_console.py; BENCH_ARGS="--people 50000 --keep")
	PYTHONPATH=$(CURDIR):$(CURDIR)/plugins $(PY) scripts/bench_console.py $(BENCH_ARGS)

clean: ## remove caches and test/demo state (keeps .venv, .airflow, .emulator, .data)
	rm -rf .airflow-test .airflow-demo .emulator-demo .pytest_cache .ruff_cache
	find . -path ./.venv -prune -o -type d -name __pycache__ -print0 | xargs -0 rm -rf

distclean: clean ## also remove .venv and local Airflow/emulator/marketing data
	rm -rf $(VENV) .airflow .airflow-celery .emulator .data
