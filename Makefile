# Palisade developer tasks. Every target does its own set-up on a fresh machine.
PY      ?= .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: install setup venv proto check lint types test test-fast bench demo images cluster cluster-down clean

install setup: ## create .venv, install Python deps and the test peers (idempotent)
	scripts/setup

venv: ## only the Python virtualenv (what make demo needs)
	bash scripts/setup.d/10-python.sh

proto: setup ## regenerate palisade/v1 stubs from proto/
	scripts/gen-proto

check: setup ## ruff, mypy --strict, import contracts, fresh proto stubs
	scripts/check

lint: check
types: check

test: setup ## the whole test suite (unit, property, e2e with real peers)
	scripts/test

test-fast: setup ## unit tests only (no e2e peers)
	scripts/test -m "not e2e"

bench: setup ## benchmarks: prints tables, writes bench/results/*.json
	$(PY) -m bench

demo: venv ## the worked example end to end on embedded defaults (needs only the virtualenv)
	$(PY) examples/demo.py
	$(PY) examples/mcp_servers/demo.py

images: venv ## the images, built without Docker (build/images/*.oci.tar)
	scripts/build-images

cluster: setup ## a single-node cluster here (Linux, root): images, chart, example MCP server
	$(PY) -m tests.harness.quickstart up

cluster-down: ## remove that cluster and everything it left on the machine
	$(PY) -m tests.harness.quickstart down

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache .hypothesis demo-out
