# The README's commands: `make run` (the demo: gateway, simulated community, dashboard),
# `make serve` (the bare gateway on embedded defaults) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run serve test lint bench clean docker-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# .venv with the project and its test extra, without running anything.
install: $(STAMP)

# The demo (gateway/demo.py): the gateway on embedded defaults under ./var/demo and a
# community fed by simulated edge agents with 30 days of history; prints the dashboard URL.
# `exec`: the command replaces the recipe's shell, so the SIGTERM that make forwards to its
# child when killed (and Ctrl-C) reaches it, and it stops everything it started.
run: $(STAMP)
	exec $(BIN)/patio demo --host $${HOST:-127.0.0.1} --port $${PORT:-8000}

# The bare gateway on its embedded defaults: SQLite and keys under ./var, port 8000.
serve: $(STAMP)
	exec $(BIN)/patio gateway serve --host $${HOST:-127.0.0.1} --port $${PORT:-8000}

lint: $(STAMP)
	$(BIN)/ruff check ledger contracts gateway edge tests bench
	$(BIN)/mypy --strict ledger contracts gateway edge

# The pinned EVM toolchain (solc, anvil) for tests/anchoring; reinstalled when the lock changes.
# --ignore-scripts: the anvil binary comes from its platform package, no download script runs.
node_modules/.installed: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	touch $@

test: lint node_modules/.installed
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench.ledger

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

# The Docker images and the compose stack on a real engine (docker/test.sh): build on a local
# Debian base (cached by docker/base.sh), up, checks through the proxy, a gateway killed, down.
docker-test: $(STAMP) node_modules/.installed
	docker/test.sh
