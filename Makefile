# The set-up commands: `make dev`, `make test` and `make bench`. Each creates .venv on first use.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && { command -v $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
GRAPHIQL := app/api/graphiql/vendor/manifest.json

.PHONY: dev test bench install lint schema clean audit-deps chromium

dev: $(INSTALLED) $(GRAPHIQL)
	$(BIN)/wfs dev $(ARGS)

test: $(INSTALLED) $(GRAPHIQL) chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

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
# its /graphql page in a browser says how to get them; the next make tries again.
$(GRAPHIQL): app/api/graphiql/fetch.py | $(INSTALLED)
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

$(INSTALLED): pyproject.toml plugins/wfs-example/pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required (python3.11, 3.12 or 3.13 on PATH)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# The example plugin: `wfs dev` serves it, the sandbox tests make it misbehave.
	$(BIN)/python -m pip install --quiet -e plugins/wfs-example
	@touch $@

lint: $(INSTALLED)
	$(BIN)/ruff check app workers tests
	$(BIN)/ruff format --check app workers tests

schema: $(INSTALLED)
	$(BIN)/wfs schema

clean:
	rm -rf $(VENV) .wfs-test tests/audit/node_modules app/api/graphiql/vendor
