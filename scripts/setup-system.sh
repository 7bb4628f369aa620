#!/usr/bin/env bash
# System packages the tests need (Debian). Idempotent: installs only what is missing.
# Set DISTILLGUARD_NO_APT=1 to skip every apt-get call (e.g. on a machine without root).
set -euo pipefail

if [ "${DISTILLGUARD_NO_APT:-0}" = "1" ]; then
  echo "setup-system: DISTILLGUARD_NO_APT=1, skipping apt-get"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
updated=0
apt_install() {
  if [ "$updated" = "0" ]; then
    apt-get update -qq
    updated=1
  fi
  apt-get install -y -qq --no-install-recommends "$@"
}

# `python3 -m venv` (./dev setup) needs ensurepip, which Debian ships separately.
python3 -c 'import ensurepip' >/dev/null 2>&1 || apt_install python3-venv

# Headless browser for tests/test_report_browser.py (Debian packages, no browser download);
# a font so that the report's text renders in screenshots.
command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 \
  || apt_install chromium chromium-driver fonts-dejavu-core

# PostgreSQL server for tests/test_adapters.py (the LiteLLM --dsn path starts its own server).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
