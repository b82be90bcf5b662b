#!/usr/bin/env bash
# Runs every test with nextest, the local stack's infrastructure being up (make test calls it
# through `stack.sh with-infra`). Removes databases that earlier, interrupted runs left
# behind; each test makes (and drops) its own.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
set -a; . .local/stack.env; set +a
stale=$(psql -qtA "$PG_ADMIN_URL" -c "select datname from pg_database where datname like 'syt\_%' and datname not like 'syt\_template\_%'")
for db in $stale; do psql -q "$PG_ADMIN_URL" -c "drop database if exists $db with (force)" >/dev/null; done
# Tests that run the services as processes (kill -9, SIGTERM, the autoscaler's local pool)
# use the binaries of this build.
cargo build --workspace --bins --locked --quiet
exec cargo nextest run --workspace --locked --no-fail-fast "$@"
