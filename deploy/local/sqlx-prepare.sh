#!/usr/bin/env bash
# Regenerates .sqlx/ (the offline query data the builds use, so they need no database).
# Applies the catalog and shard migrations to one scratch database of the local stack (their
# table names do not overlap), then re-expands every sqlx::query! macro against it with
# SQLX_OFFLINE_DIR set, which makes the macros write their data there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
bash deploy/local/stack.sh infra >/dev/null
set -a; . .local/stack.env; set +a
DB=switchyard_sqlx_prepare
ADMIN="${PG_ADMIN_URL}"
psql -q "$ADMIN" -c "drop database if exists $DB" -c "create database $DB"
URL="${ADMIN%/*}/$DB"
for f in migrations/catalog/*.sql migrations/shard/*.sql; do
  psql -q -v ON_ERROR_STOP=1 "$URL" -f "$f" >/dev/null
done
rm -rf .sqlx && mkdir -p .sqlx
# Touch the crates with queries so that their macros expand again.
touch protocol/src/lib.rs control-plane/src/lib.rs worker/src/lib.rs
DATABASE_URL="$URL" SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$ROOT/.sqlx" \
  cargo check --quiet --workspace --all-targets
echo "wrote $(ls .sqlx | wc -l) query files to .sqlx/"
