#!/usr/bin/env bash
# Install what the system and its tests need on a fresh Debian machine, idempotently:
# Debian packages, the Python virtualenv from the lock file, a running RabbitMQ and PostgreSQL,
# and the database roles. Usage: scripts/bootstrap.sh [--with-browser]
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

need_pkgs=(fonts-dejavu-core poppler-utils)
# For the tests: a real browser, and promtool (Debian package prometheus) to check the alert rules.
[ "${1:-}" = "--with-browser" ] && need_pkgs+=(chromium prometheus)
command -v rabbitmq-server >/dev/null || need_pkgs+=(rabbitmq-server)
command -v pg_ctlcluster >/dev/null || need_pkgs+=(postgresql)
missing=()
for p in "${need_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  python3 -m venv .venv
fi
if ! cmp -s requirements.lock .venv/.installed-lock 2>/dev/null; then
  echo "==> pip install -r requirements.lock"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.lock
  cp requirements.lock .venv/.installed-lock
fi

if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  echo "==> starting RabbitMQ"
  $SUDO rabbitmq-server -detached
  $SUDO rabbitmqctl await_startup --timeout 120 >/dev/null
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "==> starting PostgreSQL"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
# Trust auth for local TCP connections is assumed (as on the development machines); see README.
scripts/db-setup.sh convocations
