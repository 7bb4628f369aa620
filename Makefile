# distillguard: the two quick-start commands (README) and their building blocks.
#   make demo   set up, simulate a small scenario, validate, detect, evaluate, report
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
	$(BIN)/distillguard detect --exchanges $(DEMO)/data/exchanges \
	  --accounts $(DEMO)/data/accounts.parquet --releases $(DEMO)/data/releases.parquet \
	  --out $(DEMO)/run --exit-zero
	$(BIN)/distillguard eval --truth $(DEMO)/data/truth.parquet --pred $(DEMO)/run \
	  --exchanges $(DEMO)/data/exchanges --accounts $(DEMO)/data/accounts.parquet \
	  --json $(DEMO)/run/eval.json
	$(BIN)/distillguard report $(DEMO)/run
	@echo "demo: report at $(DEMO)/run/report.html (also campaigns.md, indicators.stix.json, enforcement.csv)"

clean-demo:
	rm -rf $(DEMO)
