# Developer entry points. `make` (or `make help`) lists the targets.
# Targets document themselves: a `## ` comment after the target's colon line is its help text.
#
#   eval "$(make -s stack-up)"    # start/reuse Kafka + PostgreSQL, export their addresses
#
# `make -s stack-up` prints only `export` lines on stdout; everything else goes to stderr.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        ?= .venv
PY          := $(VENV)/bin/python
PYTHON      ?= python3.11
REQUIREMENTS := requirements.txt requirements-pipeline.txt requirements-console.txt requirements-dev.txt
# Rebuilt only when a requirements file changes, so `make venv` is instant when up to date.
VENV_STAMP  := $(VENV)/.txmon-requirements.stamp
# Only what exists: mypy errors on a folder without Python files.
MYPY_PATHS  := $(sort $(patsubst %/,%,$(dir $(wildcard devdocs/*.py utils/*.py producer/*.py consumer/*.py console/*.py reports/*.py stack/*.py dags/*.py plugins/*.py quality/*.py deploy/*.py tests/*.py))))

.PHONY: help venv test-deps stack-up stack-down stack-status topics lint typecheck demo quality test simulate test-fast bench airflow check console \
        compose-up compose-down test-compose test-cluster docs docs-serve

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  \033[1m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(VENV_STAMP) ## create .venv (uv if available) and install requirements-dev.txt

# Output to stderr: `make -s stack-up` depends on this and must keep stdout for the export lines.
$(VENV_STAMP): $(REQUIREMENTS)
	@{ \
	  set -e; \
	  if command -v uv >/dev/null 2>&1; then \
	    [ -x $(PY) ] || uv venv --python 3.11 $(VENV); \
	    uv pip install --python $(PY) -r requirements-dev.txt; \
	  else \
	    [ -x $(PY) ] || $(PYTHON) -m venv $(VENV); \
	    $(PY) -m pip install -q -r requirements-dev.txt; \
	  fi; \
	} 1>&2
	@touch $@

stack-up: venv ## start ZooKeeper+Kafka+PostgreSQL natively (or reuse what answers); prints export lines
	@$(PY) -m stack up

stack-down: ## stop what stack-up started (data is kept)
	@$(PY) -m stack down

stack-status: ## show which stack components run, where, and their logs
	@$(PY) -m stack status

topics: venv ## create the pipeline's topic and dead-letter topic (idempotent)
	@$(PY) -m utils.kafka_cleanup create-topics

lint: venv ## ruff check + ruff format --check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: venv ## mypy over the packages
	$(PY) -m mypy $(MYPY_PATHS)

demo: venv ## run the pipeline end to end on the local stack and print a summary (COUNT=20000)
	@$(PY) -m stack.demo --count $(or $(COUNT),20000)

quality: venv ## measure every rule per incident on the local stack (QUALITY_ARGS="--fresh --count 100000")
	@$(PY) -m quality $(QUALITY_ARGS)

# What the tests need outside the venv, from Debian: the browser tests drive /usr/bin/chromium
# (Playwright cannot download its own browser here), the alerting-rule tests run promtool and
# amtool (Alertmanager's configuration).
# Installed only when missing, quietly; as root directly, otherwise through sudo.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
test-deps: ## install chromium, promtool and amtool (Debian packages) if missing; `make test` runs it
	@[ -x /usr/bin/chromium ] || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }
	@command -v promtool >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@command -v amtool >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends prometheus-alertmanager >/dev/null; }

test: venv test-deps ## all tests: unit, integration (real Kafka + PostgreSQL, started if needed) and DAGs
	$(PY) -m pytest $(PYTEST_ARGS)

# Minutes of broker bounces on three brokers: its own step, after `make test`; the measured
# stalls are printed in the run's summary.
test-cluster: venv ## broker fault tests on a three-broker Kafka cluster (TXMON_KAFKA_BROKERS=3), ~4 min
	$(PY) -m pytest tests/cluster $(PYTEST_ARGS)

simulate: venv ## the seeded consumer-group simulation over many seeds (SEEDS=100000; FIRST=0)
	$(PY) -m tests.simulation --seeds $(or $(SEEDS),100000) --first $(or $(FIRST),0)

test-fast: venv test-deps ## unit tests only (no services)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

check: lint typecheck test ## what CI runs: lint, types, every test

bench: venv ## throughput/latency benchmark with baselines (BENCH_ARGS=--quick for ~4 min)
	$(PY) -m bench.run $(BENCH_ARGS)

console: venv ## the analysts' console natively on the local stack: http://127.0.0.1:8000 (CONSOLE_PORT)
	@eval "$$($(PY) -m stack up)" && $(PY) -m utils.database migrate && $(PY) -m console serve

docs: venv ## build the documentation site into site/ (--strict: any warning fails)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

docs-serve: venv ## serve the documentation on http://127.0.0.1:8008 (the console has 8000), rebuilt on every save (DOCS_PORT moves it)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve --dev-addr 127.0.0.1:$(or $(DOCS_PORT),8008)

airflow: venv ## Airflow natively (standalone, UI on :8080) with the DAGs loaded
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/airflow_standalone.sh

# --- Docker Compose ---------------------------------------------------------------------------
# Where no engine runs, docker/engine.sh starts one (and installs docker.io and the Compose
# plugin if missing); where no registry answers, docker/offline/ builds the base images.
# OFFLINE=1 builds those stand-ins without trying a registry first.

compose-up: venv ## docker compose stack: .env with fresh secrets if none, build, start, wait for health, print URLs (CLUSTER=1: three Kafka brokers)
	@$(PY) -m deploy $(if $(filter 1,$(CLUSTER)),--cluster) up

compose-down: venv ## stop the Compose stack; data volumes stay (V=1 deletes them; CLUSTER=1 for a cluster's)
	@$(PY) -m deploy $(if $(filter 1,$(CLUSTER)),--cluster) down $(if $(filter 1,$(V)),--volumes)

test-compose: venv ## end-to-end test of the Compose stack under a real engine (own project name and ports)
	$(PY) -m pytest tests/compose $(PYTEST_ARGS)
