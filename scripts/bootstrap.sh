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

start_broker() {
  $SUDO rabbitmq-server -detached
  timeout 150 $SUDO rabbitmqctl await_startup --timeout 140 >/dev/null 2>&1
}
broker_answers() {
  timeout 60 $SUDO rabbitmqctl -q list_vhosts >/dev/null 2>&1
}
if ! timeout 30 rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  echo "==> starting RabbitMQ"
  start_broker || true
fi
if ! broker_answers; then
  # Seen here: a broker alive but wedged (connections and rabbitmqctl hang). Restart it.
  echo "==> RabbitMQ does not answer: restarting it"
  timeout 60 $SUDO rabbitmqctl stop >/dev/null 2>&1 || $SUDO pkill -9 -f beam.smp || true
  sleep 2
  start_broker || true
  if ! broker_answers && [ -n "${CI:-}" ]; then
    # CI's broker holds nothing of value: start it from empty rather than fail the run.
    echo "==> RabbitMQ still stuck: resetting its data (CI only)"
    $SUDO pkill -9 -f beam.smp || true
    $SUDO rm -rf /var/lib/rabbitmq/mnesia/*
    start_broker
  fi
  broker_answers || { echo "RabbitMQ does not answer; see /var/log/rabbitmq/" >&2; exit 1; }
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "==> starting PostgreSQL"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
# Trust auth for local TCP connections is assumed (as on the development machines); see README.
scripts/db-setup.sh convocations
