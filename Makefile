# Tapedeck: `make run` serves the UI on http://127.0.0.1:8000, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FRONTEND_SOURCES := $(shell find frontend -name node_modules -prune -o -path frontend/out -prune -o -path frontend/.next -prune -o -path 'frontend/packages/*/dist' -prune -o -type f -print 2>/dev/null)

.PHONY: bench-cluster run test test-fast test-faults test-powercut soak test-cluster test-cluster-long test-cluster-object-tier metrics-server cluster-tools cluster-images geckodriver s3-bin proto lint format frontend bench screenshots clean test-frontend test-lowest lock lock-check

run: $(VENV)/.stamp-run frontend
	$(BIN)/tapedeck up

# The cluster suite runs when its binaries are built (tests/cluster/build-tools.sh) and always
# in CI, where a missing binary is an error rather than a skip.
test: $(VENV)/.stamp-dev $(VENV)/.stamp-powercut frontend test-frontend
	$(BIN)/pytest --ignore=tests/cluster
	@if [ "$$CI" = true ] || { tests/cluster/build-tools.sh --check && tests/cluster/build-node.sh --check; } 2>/dev/null; then \
		$(MAKE) --no-print-directory test-cluster; \
	else echo "cluster suite skipped: no binaries yet (make cluster-tools, then make test-cluster)"; fi

# etcd, kube-apiserver, kube-controller-manager, helm, and the real node's kubelet,
# kube-scheduler, kube-proxy, kubectl, containerd, CNI plugins, CoreDNS and pause, Traefik
# (the ingress controller of the browser test) and kube-network-policies (the NetworkPolicy
# enforcer of test_network_policy.py): built once per machine from pinned Go modules, cached in
# ~/.cache/tapedeck/cluster-bin, node-bin, traefik and netpol (tens of minutes cold, instant
# warm).
cluster-tools:
	tests/cluster/build-tools.sh
	tests/cluster/build-node.sh
	tests/cluster/build-traefik.sh
	tests/cluster/build-netpol.sh

# The browser suite's Firefox tests drive Debian's firefox-esr through geckodriver, built once
# per machine with `cargo install` (pinned) into ~/.cache/tapedeck/geckodriver; without it
# they skip (outside CI).
geckodriver:
	tests/browser/build-geckodriver.sh

# SeaweedFS's `weed` for the S3 tier's tests: built once per machine from its pinned Go module,
# cached in ~/.cache/tapedeck/s3-bin (tests/s3/build-weed.sh).
s3-bin:
	tests/s3/build-weed.sh

# The two docker/Dockerfile targets (buildah, from local Debian bases) and the node's pause and
# CoreDNS images, cached in ~/.cache/tapedeck/images by a hash of their inputs.
cluster-images: cluster-tools
	tests/cluster/build-images.sh

# The suite starts a real node (root: bridges, iptables) and installs the chart on it.
# The whole cluster suite, including two storage replicas over the object tier
# (tests/cluster/test_object_tier.py; its SeaweedFS runs on a tmpfs of its own).
test-cluster: $(VENV)/.stamp-cluster cluster-images
	TAPEDECK_REQUIRE_CLUSTER=1 $(BIN)/pytest tests/cluster --ignore=tests/cluster/test_hpa_on_node.py

# Issue 17 at length on the real node: the HPA adding ingest replicas under load (metrics-server
# built from its Go module into ~/.cache/tapedeck/metrics-server), then ROUNDS rounds of rolling
# updates under recording clients (ROLLING_CLIENTS each); -rP prints each round's figures.
ROUNDS ?= 3
ROLLING_CLIENTS ?= 16
test-cluster-long: $(VENV)/.stamp-cluster cluster-images metrics-server
	TAPEDECK_REQUIRE_CLUSTER=1 TAPEDECK_ROLLING_ROUNDS=$(ROUNDS) TAPEDECK_ROLLING_CLIENTS=$(ROLLING_CLIENTS) \
		$(BIN)/pytest -rP tests/cluster/test_hpa_on_node.py tests/cluster/test_rolling.py

metrics-server:
	tests/cluster/build-metrics-server.sh

# Only the object-tier test of the cluster suite (an alias kept for habit and CI scripts).
test-cluster-object-tier: $(VENV)/.stamp-cluster cluster-images
	TAPEDECK_REQUIRE_CLUSTER=1 $(BIN)/pytest tests/cluster/test_object_tier.py

$(VENV)/.stamp-cluster: tests/cluster/requirements.txt $(VENV)/.stamp-dev
	$(BIN)/pip install -q --disable-pip-version-check -r tests/cluster/requirements.txt
	touch $@

# The power-cut file system (tests/powercut/fs.py, FUSE): pyfuse3 builds against Debian's
# libfuse3-dev. Without it the suite skips on a laptop; in CI, which installs it, that fails.
$(VENV)/.stamp-powercut: tests/powercut/requirements.txt $(VENV)/.stamp-dev
	@if $(BIN)/pip install -q --disable-pip-version-check -r tests/powercut/requirements.txt; then \
		touch $@; \
	elif [ "$$CI" = true ]; then exit 1; \
	else echo "pyfuse3 did not build (apt-get install fuse3 libfuse3-dev pkg-config): the power-cut suite skips"; fi

# Thousands of randomized cut points (make test runs 200); TAPEDECK_POWERCUT_SEED replays a run.
TAPEDECK_POWERCUT_CUTS ?= 3000
test-powercut: $(VENV)/.stamp-powercut
	TAPEDECK_POWERCUT_CUTS=$(TAPEDECK_POWERCUT_CUTS) $(BIN)/pytest tests/powercut

# The nemesis (tests/soak/nemesis.py, not part of `make test`): 20 protocol clients for 10
# minutes under 100+ random faults, then a checker. SOAK="--seed N" repeats a run (its seed is
# printed first); SOAK="--minutes 30 --clients 30" runs longer.
soak: $(VENV)/.stamp-dev $(VENV)/.stamp-powercut
	$(BIN)/python tests/soak/nemesis.py --minutes 10 --clients 20 $(SOAK)

test-fast: $(VENV)/.stamp-dev
	$(BIN)/pytest -m "not browser and not faults" -x --ignore=tests/cluster

# Kills, drops, full disks, slow clients (also part of `make test`).
test-faults: $(VENV)/.stamp-dev
	$(BIN)/pytest -m faults

# Dependencies from the hash lock (requirements/, make lock), then Tapedeck itself without any.
PIP_LOCKED := $(BIN)/pip install -q --disable-pip-version-check --require-hashes -r
PIP_SELF := $(BIN)/pip install -q --disable-pip-version-check --no-deps -e .

$(VENV)/.stamp-run: pyproject.toml requirements/embedded.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_LOCKED) requirements/embedded.txt
	$(PIP_SELF)
	touch $@

$(VENV)/.stamp-dev: pyproject.toml requirements/dev.txt $(VENV)/.stamp-run
	$(PIP_LOCKED) requirements/dev.txt
	$(PIP_SELF)
	touch $@

# After changing pyproject.toml's dependencies: the lock of every role, for every Python the
# project supports (requirements/lock.sh). `make lock UPGRADE=1` moves every pin to the newest.
lock: $(VENV)/.stamp-dev
	UV=$(BIN)/uv requirements/lock.sh $(if $(UPGRADE),--upgrade)

lock-check: $(VENV)/.stamp-dev
	UV=$(BIN)/uv requirements/lock.sh --check

# The fast suite with the LOWEST versions pyproject.toml allows (uv's lowest-direct resolution,
# on the oldest supported Python): proves its lower bounds true. Not part of `make test`.
LOWEST := $(VENV)-lowest
test-lowest: $(VENV)/.stamp-dev
	rm -rf $(LOWEST)
	$(BIN)/uv venv -q --python $(PYTHON) $(LOWEST)
	$(BIN)/uv pip install -q --python $(LOWEST)/bin/python --resolution lowest-direct -e '.[dev]'
	$(BIN)/uv pip freeze --python $(LOWEST)/bin/python
	$(LOWEST)/bin/pytest -m "not browser and not faults" -x --ignore=tests/cluster

# The UI is optional for the API, so a machine without npm still runs (and says so).
frontend: $(if $(FRONTEND_SOURCES),frontend/out/index.html)

frontend/out/index.html: $(FRONTEND_SOURCES)
	@if command -v npm >/dev/null; then \
		cd frontend && npm ci --no-audit --no-fund --loglevel=error && NEXT_TELEMETRY_DISABLED=1 npm run build; \
	else echo "npm not found: serving the API without the UI"; fi

# The frontend's unit tests (Vitest: @tapedeck/recorder's ledger, close codes, reconnects,
# IndexedDB). Without npm they skip on a laptop; CI has npm, so there a failure fails.
test-frontend: frontend
	@if command -v npm >/dev/null; then cd frontend \
		&& { [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error; } && npm test; \
	elif [ "$$CI" = true ]; then echo "CI needs npm for the frontend tests" >&2; exit 1; \
	else echo "npm not found: the frontend unit tests skip"; fi

proto: $(VENV)/.stamp-dev
	$(BIN)/python proto/generate.py services/tapedeck/_proto

lint: $(VENV)/.stamp-dev lock-check
	@if [ -x $(BIN)/hadolint ]; then $(BIN)/hadolint docker/Dockerfile; fi
	$(BIN)/ruff format --check services operator tests bench proto docs
	$(BIN)/ruff check services operator tests bench proto docs
	$(BIN)/mypy
	@if [ -d frontend/node_modules ]; then cd frontend && npm run --silent lint; fi

format: $(VENV)/.stamp-dev
	$(BIN)/ruff format services operator tests bench proto docs
	$(BIN)/ruff check --fix services operator tests bench proto docs

# Issue 18 target 4 on the cluster suite's real node: stop → `Ready` for a followed recording
# and for a one-shot compile Job (needs root and the cluster binaries; not part of `bench`).
# TAPEDECK_BENCH_MINUTES=1 for a quick run (TAPEDECK_BENCH_SPEED: 10 by default).
bench-cluster: $(VENV)/.stamp-cluster cluster-images
	TAPEDECK_REQUIRE_CLUSTER=1 $(BIN)/pytest -s tests/cluster/bench_time_to_ready.py

# Every benchmark against its same-run baseline; writes docs/performance.md (about two hours).
# BENCH=--quick for a smoke run; the download benchmarks need nginx (apt-get install nginx),
# bench/s3_tier.py the SeaweedFS binary (make s3-bin).
bench: $(VENV)/.stamp-dev
	$(BIN)/python bench/report.py $(BENCH)

screenshots: $(VENV)/.stamp-dev frontend
	$(BIN)/python docs/make_screenshots.py

clean:
	rm -rf $(VENV) frontend/node_modules frontend/out frontend/.next frontend/packages/*/dist
