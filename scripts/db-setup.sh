#!/usr/bin/env bash
# Create the database and the four service roles (idempotent). Usage: scripts/db-setup.sh [dbname]
set -euo pipefail
DB="${1:-convocations}"
export PGOPTIONS="-c client_min_messages=warning"
PSQL=(psql -v ON_ERROR_STOP=1 -q -h "${PGHOST:-127.0.0.1}" -p "${PGPORT:-5432}" -U "${PGUSER:-postgres}")
if ! "${PSQL[@]}" -d postgres -tAc "select 1 from pg_database where datname='$DB'" | grep -q 1; then
  "${PSQL[@]}" -d postgres -c "create database \"$DB\""
fi
"${PSQL[@]}" -d "$DB" -f "$(dirname "$0")/../deploy/postgres/init.sql"
