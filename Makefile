# Tapedeck: `make run` serves the UI on http://127.0.0.1:8000, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FRONTEND_SOURCES := $(shell find frontend -path frontend/node_modules -prune -o -path frontend/out -prune -o -path frontend/.next -prune -o -type f -print 2>/dev/null)

.PHONY: run test test-fast proto lint format frontend bench screenshots clean

run: $(VENV)/.stamp-run frontend
	$(BIN)/tapedeck up

test: $(VENV)/.stamp-dev frontend
	$(BIN)/pytest

test-fast: $(VENV)/.stamp-dev
	$(BIN)/pytest -m "not browser" -x

$(VENV)/.stamp-run: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e .
	touch $@

$(VENV)/.stamp-dev: pyproject.toml $(VENV)/.stamp-run
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

# The UI is optional for the API, so a machine without npm still runs (and says so).
frontend: $(if $(FRONTEND_SOURCES),frontend/out/index.html)

frontend/out/index.html: $(FRONTEND_SOURCES)
	@if command -v npm >/dev/null; then \
		cd frontend && npm ci --no-audit --no-fund --loglevel=error && NEXT_TELEMETRY_DISABLED=1 npm run build; \
	else echo "npm not found: serving the API without the UI"; fi

proto: $(VENV)/.stamp-dev
	$(BIN)/python proto/generate.py services/tapedeck/_proto

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff format --check services tests bench proto docs
	$(BIN)/ruff check services tests bench proto docs
	$(BIN)/mypy
	@if [ -d frontend/node_modules ]; then cd frontend && npx tsc --noEmit; fi

format: $(VENV)/.stamp-dev
	$(BIN)/ruff format services tests bench proto docs
	$(BIN)/ruff check --fix services tests bench proto docs

bench: $(VENV)/.stamp-dev
	$(BIN)/python bench/ingest_memory.py
	$(BIN)/python bench/compile_time.py

screenshots: $(VENV)/.stamp-dev frontend
	$(BIN)/python docs/make_screenshots.py

clean:
	rm -rf $(VENV) frontend/node_modules frontend/out frontend/.next
