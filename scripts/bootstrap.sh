#!/usr/bin/env bash
# Install what the system and its tests need on a fresh Debian machine, idempotently:
# Debian packages, the Python virtualenv from the hashed lock file, a running RabbitMQ and PostgreSQL,
# and the database roles. Usage: scripts/bootstrap.sh [--with-browser]
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

# The issuer lays out its letters with WeasyPrint, which loads pango, harfbuzz's subsetter and fontconfig.
need_pkgs=(fonts-dejavu-core poppler-utils libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0)
# Debian splits venv (and ensurepip) out of python3.
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need_pkgs+=("python3-venv")
# For the tests: a real browser (Debian's chromium; its headless shell runs the browser tests, the full browser
# records the guide's video and is compared with it), Prometheus (promtool checks the alert rules) with the blackbox exporter, and
# barman-cloud's tools for the production-like tier's backup and restore drill (barman-cli-cloud).
# npm installs the pinned axe-core of the accessibility tests (tests/browser/a11y/package-lock.json).
# The video guide (make guide, and its test): ffmpeg encodes it, espeak-ng speaks its narration.
[ "${1:-}" = "--with-browser" ] && need_pkgs+=(chromium chromium-headless-shell prometheus prometheus-blackbox-exporter ffmpeg espeak-ng barman-cli-cloud)
# A Node.js from elsewhere brings its own npm (Debian's npm package would conflict with it).
[ "${1:-}" = "--with-browser" ] && ! command -v npm >/dev/null && need_pkgs+=(npm)
command -v rabbitmq-server >/dev/null || need_pkgs+=(rabbitmq-server)
command -v pg_ctlcluster >/dev/null || need_pkgs+=(postgresql)
missing=()
for p in "${need_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A half-made .venv (interrupted creation, a Python upgraded underneath it, no pip) is rebuilt,
# never reused: it would fail later with a confusing import error.
venv_ok() {
  .venv/bin/python -c "import pip, sys; sys.exit(0)" >/dev/null 2>&1
}
if [ -e .venv ] && ! venv_ok; then
  echo "==> .venv is incomplete: rebuilding it"
  rm -rf .venv
fi
if [ ! -e .venv ]; then
  echo "==> creating .venv"
  python3 -m venv .venv
  rm -f .venv/.installed-lock
fi
# requirements/dev.lock: every package of the services, tests and tools, pinned with its hashes.
# uv installs it (pinned in requirements/uv.lock, installed by the venv's own pip): about 8 s on two cores
# where pip took a minute. It compiles the bytecode as pip did: a Python told not to write it
# (PYTHONDONTWRITEBYTECODE) would otherwise compile every library again in every process. uv reads
# neither pip.conf nor PIP_INDEX_URL: a mirror goes in UV_DEFAULT_INDEX, a proxy in HTTPS_PROXY.
if ! cmp -s requirements/dev.lock .venv/.installed-lock 2>/dev/null; then
  .venv/bin/pip install -q --require-hashes -r requirements/uv.lock
  echo "==> uv pip install --require-hashes -r requirements/dev.lock"
  .venv/bin/uv pip install -q --require-hashes --compile-bytecode --python .venv/bin/python -r requirements/dev.lock
  cp requirements/dev.lock .venv/.installed-lock
fi

a11y=tests/browser/a11y
if [ "${1:-}" = "--with-browser" ] && { [ ! -f $a11y/node_modules/.package-lock.json ] \
    || [ $a11y/package-lock.json -nt $a11y/node_modules/.package-lock.json ]; }; then
  echo "==> npm ci (axe-core for the accessibility tests)"
  npm ci --prefix $a11y --no-audit --no-fund --silent
fi

# The machine's RabbitMQ serves `make run`. The tests (--with-browser) start a node of their own
# (tools/devstack/broker.py) and need only the rabbitmq-server package.
if [ "${1:-}" != "--with-browser" ]; then
  broker_answers() {
    timeout 60 $SUDO rabbitmqctl -q list_vhosts >/dev/null 2>&1
  }
  if ! timeout 30 rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
    echo "==> starting RabbitMQ"
    $SUDO rabbitmq-server -detached
    timeout 150 $SUDO rabbitmqctl await_startup --timeout 140 >/dev/null 2>&1 || true
  fi
  # A broker that runs but does not answer belongs to whoever started it: this script never stops,
  # kills or resets it (nor deletes its data). It says so and stops instead.
  if ! broker_answers; then
    echo "RabbitMQ on this machine does not answer rabbitmqctl. Restart it yourself" >&2
    echo "(for example: rabbitmqctl stop; rabbitmq-server -detached) and run this again." >&2
    echo "Its log is in /var/log/rabbitmq/." >&2
    exit 1
  fi
  # Per-queue metrics (depth, consumers, dead-letter queues) for the alerts: the broker's own Prometheus
  # endpoint on :15692. RabbitMQ 3.10 was seen here, after a restart, with every feature flag disabled
  # (quorum queues then cannot be declared): enable them all, which is idempotent.
  if ! timeout 60 $SUDO rabbitmq-plugins list -e -q 2>/dev/null | grep -q rabbitmq_prometheus; then
    echo "==> enabling the rabbitmq_prometheus plugin"
    timeout 120 $SUDO rabbitmq-plugins enable -q rabbitmq_prometheus >/dev/null
  fi
  timeout 60 $SUDO rabbitmqctl -q enable_feature_flag all >/dev/null 2>&1 || true
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "==> starting PostgreSQL"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
# The postgres superuser is reached the libpq way: trust, or PGPASSWORD / ~/.pgpass when the local
# server asks for a password (README, "The two commands"; docs/testing.md for the tests).
if ! psql -q -h "${PGHOST:-127.0.0.1}" -p "${PGPORT:-5432}" -U "${PGUSER:-postgres}" -d postgres -tAc 'select 1' >/dev/null 2>&1; then
  echo "Cannot connect to PostgreSQL as ${PGUSER:-postgres} on ${PGHOST:-127.0.0.1}:${PGPORT:-5432}." >&2
  echo "If it asks for a password, export PGPASSWORD (or add a ~/.pgpass line) and run this again." >&2
  exit 1
fi
scripts/db-setup.sh convocations
