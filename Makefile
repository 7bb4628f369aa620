# distillguard: the two quick-start commands (README) and their building blocks.
#   make demo   set up, simulate a small scenario, validate it (detect/report as they land)
#   make test   set up, then ruff and the whole test suite
# Setup is idempotent: it reruns only when pyproject.toml, requirements.lock or
# scripts/setup-system.sh change (a content hash kept in $(STAMP)).
# DISTILLGUARD_NO_APT=1 skips the Debian packages (no root); the tests that need them skip.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.distillguard-setup
SETUP_INPUTS := pyproject.toml requirements.lock scripts/setup-system.sh
EXTRAS := spark,provenance,dev
DEMO := demo

.PHONY: setup test lint demo clean-demo

setup:
	@key="$$(cat $(SETUP_INPUTS) | sha256sum | cut -d' ' -f1)"; \
	if [ -x $(BIN)/distillguard ] && [ "$$(cat $(STAMP) 2>/dev/null)" = "$$key" ]; then \
	  echo "setup: up to date"; exit 0; \
	fi; \
	scripts/setup-system.sh; \
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV); \
	$(BIN)/python -m pip install -c requirements.lock -e '.[$(EXTRAS)]'; \
	echo "$$key" > $(STAMP); \
	echo "setup: done ($(VENV))"

lint: setup
	$(BIN)/ruff check src tests bench

test: lint
	$(BIN)/pytest -q

demo: setup
	$(BIN)/distillguard simulate --scenario small --seed 1 --out $(DEMO)/data
	$(BIN)/distillguard validate $(DEMO)/data/exchanges \
	  --accounts $(DEMO)/data/accounts.parquet --releases $(DEMO)/data/releases.parquet \
	  --quarantine $(DEMO)/quarantine.parquet
	@echo "demo: data in $(DEMO)/data, quarantine in $(DEMO)/quarantine.parquet"

clean-demo:
	rm -rf $(DEMO)
