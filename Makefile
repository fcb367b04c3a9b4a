# Tallylight: `make run` starts the platform on the embedded defaults; `make test` runs every test.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test venv test-deps system-deps services migrate lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

migrate: venv
	$(VENV)/bin/tally migrate

## Install, migrate and start everything in one process on http://$(HOST):$(PORT)
run: migrate
	HOST=$(HOST) PORT=$(PORT) $(VENV)/bin/tally serve

system-deps:
	bash infra/scripts/install-system-deps.sh

services:
	bash infra/scripts/ensure-services.sh

test-deps: system-deps services $(VENV)/.test-installed

## Install what the tests need (apt packages, services, virtualenv) and run the whole suite
test: test-deps
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) var
