# The set-up commands: `make dev`, `make test` and `make bench`. Each creates .venv on first use.
# `make dev` installs the project with its `dev` extra (the embedded servers `wfs dev` starts),
# `make test` with `dev` and `test`; the production image has neither (deploy/Dockerfile).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && { command -v $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
DEV_INSTALLED := $(VENV)/.installed-dev
INSTALLED := $(VENV)/.installed-test
GRAPHIQL := app/api/graphiql/vendor/manifest.json
UV_VERSION := 0.13.8

.PHONY: dev test bench install lint schema clean audit-deps chromium lock

dev: $(DEV_INSTALLED) $(GRAPHIQL)
	$(BIN)/wfs dev $(ARGS)

# The suite runs in TEST_WORKERS processes (pytest-xdist, whole files per process);
# TEST_WORKERS=0 runs it in this one.
TEST_WORKERS ?= 2
test: $(INSTALLED) $(GRAPHIQL) chromium
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# tests/audit (the graphql-http audit and a graphql-ws client) runs in Node 20+; without npm
# its tests skip and say so. Installed again only when its lock file changes.
test: audit-deps
audit-deps: tests/audit/node_modules/.package-lock.json
tests/audit/node_modules/.package-lock.json: tests/audit/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix tests/audit --no-audit --no-fund; \
	else echo "npm not found: the tests that use tests/audit will skip"; fi

# Starts its own `wfs dev` (state in .wfs-bench/); ARGS="--only start_latency", "--full", ...
bench: $(INSTALLED)
	$(BIN)/python -m bench.run $(ARGS)

install: $(INSTALLED) $(GRAPHIQL)

# GraphiQL's npm files (pinned with their sha512 in the script). Offline, the API still runs and
# its /graphql page in a browser says how to get them; the next make tries again. (Standard
# library only: it needs the venv, not the dependencies.)
$(GRAPHIQL): app/api/graphiql/fetch.py | $(BIN)/python
	$(BIN)/python -m app.api.graphiql.fetch && touch $@ || echo "GraphiQL stays off until this download works"

# tests/browser drive Debian's chromium. Installed here when missing and we may (root with
# apt-get); otherwise those tests skip and say why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null 2>&1 \
	  && { echo "installing chromium (apt-get) for tests/browser"; \
	       export DEBIAN_FRONTEND=noninteractive; \
	       apt-get install -y -qq chromium >/dev/null 2>&1 \
	       || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; } \
	       || echo "chromium could not be installed: tests/browser will skip"; }; } || true

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required (python3.11, 3.12 or 3.13 on PATH)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The lock first (every version pinned, every file checked against its hash), then the project
# itself, editable, with its extras: a dependency pyproject.toml gained since the last
# `make lock` still installs (and tests/unit/test_packaging.py says the lock is stale).
# The example plugin (plugins/wfs-example, docs/plugins.md) is installed beside the service.
$(DEV_INSTALLED): pyproject.toml requirements/dev.lock plugins/wfs-example/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements/dev.lock
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps -e plugins/wfs-example
	@touch $@

$(INSTALLED): pyproject.toml requirements/test.lock plugins/wfs-example/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements/test.lock
	$(BIN)/python -m pip install --quiet -e ".[dev,test]"
	$(BIN)/python -m pip install --quiet --no-deps -e plugins/wfs-example
	@touch $@ $(DEV_INSTALLED)

# Regenerates requirements/*.lock from pyproject.toml (universal: Linux, macOS, Windows,
# Python 3.11+), with hashes. Run it after changing a dependency, and commit the result.
LOCK := $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes --quiet
lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(LOCK) -o requirements/prod.lock
	$(LOCK) --extra dev -o requirements/dev.lock
	$(LOCK) --extra dev --extra test -o requirements/test.lock

lint: $(INSTALLED)
	$(BIN)/ruff check app workers tests bench alembic plugins
	$(BIN)/ruff format --check app workers tests bench alembic plugins

schema: $(INSTALLED)
	$(BIN)/wfs schema

clean:
	rm -rf $(VENV) .wfs-test tests/audit/node_modules app/api/graphiql/vendor
