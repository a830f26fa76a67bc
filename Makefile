# drill: every install step lives here, so a fresh machine needs only `make drill` / `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DRILL := $(BIN)/drill
PYTEST_ARGS ?=
TEST_WORKERS ?= 4
APT_PACKAGES := debootstrap iproute2 iptables chromium e2fsprogs util-linux

.PHONY: help setup engine images lint unit integration test drill bench clean engine-stop

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed ## Create .venv and install drill with its system packages
	@missing=$$(for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "please install: $$missing" >&2; exit 2; fi; \
	fi

engine: setup ## Use the Docker engine that answers, or start a private one
	$(DRILL) engine ensure

engine-stop: ## Stop the private engine drill started (never any other)
	$(DRILL) engine stop

images: engine ## Build every role's image (cached by content)
	$(DRILL) images build

lint: setup ## ruff and mypy over the package
	$(BIN)/ruff check harness tests bench examples
	$(BIN)/ruff format --check harness tests bench examples
	$(BIN)/mypy

unit: setup ## Fast unit tests, no engine needed
	$(BIN)/pytest -q -m 'not integration' $(PYTEST_ARGS)

integration: images ## Integration tests against the real engine and components
	$(BIN)/pytest -q -m integration $(PYTEST_ARGS)

# Integration tests run 4 at a time (a test file stays on one worker, so its lab is shared);
# tests that measure timing or touch every lab run alone afterwards.
test: images lint ## Everything CI runs: engine, images, lint, unit and integration tests
	@$(BIN)/pytest -q -m 'not serial' -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here" >&2; exit 1; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	$(BIN)/pytest -q -m serial $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no serial tests: that is a failure here" >&2; exit 1; fi; \
	exit $$rc

drill: images ## Run the default drill (site-outage on enterprise) and write its report
	$(DRILL) run site-outage --topology enterprise

bench: images ## Benchmarks; each prints JSON (see bench/RESULTS.md)
	@for b in bench/[!_]*.py; do echo "== $$b" >&2; $(BIN)/python $$b || exit $$?; done

clean: ## Remove every lab (by label); images and the engine stay
	-$(DRILL) down --all
