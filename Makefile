# On a fresh machine: `make run` serves, `make test` runs the whole suite in parallel (the
# local-model tests skip), `make test-embeddings` adds the `embeddings` extra and runs those tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= examples/routekeeper.yaml
WORKSPACE ?= ./.routekeeper
# `make run PORT=9123 HOST=0.0.0.0` passes --port/--host; left empty, serve takes
# server.port/server.host from ROUTEKEEPER_SERVER__PORT/__HOST, then the config file.
PORT ?=
HOST ?=
# Extra pytest arguments for `make test` / `make test-embeddings`; by default the 20 slowest
# tests are listed at the end (`make test PYTEST_ARGS=` drops that).
PYTEST_ARGS ?= --durations=20
# Both targets run the tests on this many pytest-xdist workers (most of a test's time is
# waiting on server processes, not CPU); `--dist loadgroup` keeps the tests of one
# `xdist_group` on one worker, and a test marked `exclusive` runs while no other does.
# `make test PYTEST_WORKERS=0` runs everything in one process, in file order (for debugging).
PYTEST_WORKERS ?= 4
XDIST_ARGS := $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadgroup)

.PHONY: run test test-embeddings lint inventory docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files re-run the install only when pyproject.toml changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres,redis]'
	@touch $@ $(VENV)/.installed-run

# torch first, pinned: `pip install torch==2.13.0` is a local CPU build on these machines.
$(VENV)/.installed-embeddings: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres,redis,embeddings]'
	@touch $@ $(VENV)/.installed-dev $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/routekeeper serve --config $(CONFIG) --workspace $(WORKSPACE)$(if $(HOST), --host $(HOST))$(if $(PORT), --port $(PORT))

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(XDIST_ARGS) $(PYTEST_ARGS)

# Only the tests marked `embeddings`; here a missing extra fails them instead of skipping, and
# pytest's exit code 5 (nothing collected) fails the target.
test-embeddings: $(VENV)/.installed-embeddings
	ROUTEKEEPER_REQUIRE_EMBEDDINGS=1 $(BIN)/python -m pytest -m embeddings $(XDIST_ARGS) $(PYTEST_ARGS)

# ruff (lint and format) on src, tests and bench; mypy as configured in pyproject.toml.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

inventory: $(VENV)/.installed-run
	$(BIN)/routekeeper state inventory --format md > docs/state-inventory.md

# docs/settings.md and docs/cli.md, generated from the settings models and the command tree.
docs: $(VENV)/.installed-run
	$(BIN)/python -m routekeeper.cli.reference

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
