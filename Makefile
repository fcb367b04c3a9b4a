# Tallylight: `make run` starts the platform on the embedded defaults; `make test` runs every test.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test cluster venv test-deps web-deps system-deps services migrate lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Browser libraries the pages load as files (hls.js, dash.js, uPlot), pinned in web/package-lock.json.
# Without npm the platform still runs; the watch page then has no HLS fallback (it says so).
web/node_modules/.installed: web/package.json web/package-lock.json
	@if command -v npm >/dev/null; then \
		bash infra/scripts/install-web-deps.sh; \
	else echo "npm not found: install Node.js/npm for the watch page's HLS fallback (hls.js)"; fi

web-deps: web/node_modules/.installed

migrate: venv
	$(VENV)/bin/tally migrate

## Install, migrate and start everything in one process on http://$(HOST):$(PORT)
run: migrate web-deps
	HOST=$(HOST) PORT=$(PORT) $(VENV)/bin/tally serve

## A cluster on this machine: a front door on http://$(HOST):$(PORT) and one media node per core,
## each its own process, on the local Redis and PostgreSQL (database `tallylight`, created if missing)
CLUSTER_DATABASE_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/tallylight
cluster: services venv web-deps
	@psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'tallylight'" | grep -q 1 \
		|| createdb -h 127.0.0.1 -U postgres tallylight
	HOST=$(HOST) PORT=$(PORT) BUS_URL=redis://127.0.0.1:6379/0 DATABASE_URL=$(CLUSTER_DATABASE_URL) \
		$(VENV)/bin/tally cluster

system-deps:
	bash infra/scripts/install-system-deps.sh

services:
	bash infra/scripts/ensure-services.sh

test-deps: system-deps services $(VENV)/.test-installed web-deps

## Install what the tests need (apt packages, services, virtualenv) and run the whole suite
test: test-deps
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -p no:cacheprovider --durations=15

clean:
	rm -rf $(VENV) var web/node_modules
