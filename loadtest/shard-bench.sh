#!/usr/bin/env bash
# The sharding-at-scale benchmark behind `make bench-shards`: 1,000,000 orgs over 4 shards.
# Writes the `shards` section of docs/benchmarks.md (between `<!-- section:shards -->`
# markers) and leaves the rest of the file as it is.
#
#   loadtest/shard-bench.sh        everything (8–15 minutes once built, on 2 cores)
#
# What it measures:
# - the in-process shard lookup and the map's validation (cargo bench, criterion:
#   protocol/benches/shardmap.rs) for 4, 16, 4,000 and 40,000 ranges;
# - on a catalog holding the orgs: the shard-map load (`read_map`, `ShardRouter::load`) and
#   `ShardRouter::route` per lookup (`loadtest shard-map`), three times, with 16 ranges and
#   again with 4,000;
# - the onboarding rate through the real HTTP API (`POST /v1/orgs`): the highest constant
#   rate whose p99 stays under BENCH_P99_MS (`loadtest search --scenario onboarding`), on
#   the empty catalog first, then with the orgs loaded, BENCH_RUNS times each; and where the
#   new orgs were placed (the least-loaded shards of the region), checked;
# - the control plane's start-up time to `/readyz`, empty and with the orgs.
#
# What it uses and what it leaves:
# - The local stack's PostgreSQL, NATS (us-east-1) and Redis, started if needed with
#   `deploy/local/stack.sh infra` (idempotent) and never stopped here. The stack's own
#   control planes and workers are not touched.
# - Its own catalog database and 4 shard databases (`sybench_catalog_<id>`,
#   `sybench_shard_<id>_<n>`), NATS namespace (`sybench<id>`) and Redis key prefix
#   (`sybench<id>:`), and one release control plane of its own on BENCH_PORT (18745), all
#   removed at the end, whatever happens (its processes by pid). BENCH_TIMEOUT (45m) bounds
#   the whole run.
# Results go to .local/bench-shards/; the section to docs/benchmarks.md.
#
# The orgs are bulk-loaded with SQL (`insert … select … from generate_series`), in chunks,
# as onboarding would have left them: per org, in the catalog `org` (active), `app_user`,
# `membership` (owner) and `api_key`; on its shard `tenant`, its default `trigger_rule` and
# its `org.create` audit entry. The 4 shards hold 4 interleaved ranges each (16 ranges of
# BENCH_ORGS/10 ids) and are loaded unevenly on purpose — 27 %, 27 %, 23 %, 23 % of the orgs
# — so that placement has a least-loaded pair to choose.
#
# Settings (environment): BENCH_ORGS (1000000), BENCH_RUNS (3), BENCH_BASELINE (1: measure
# onboarding on the empty catalog too), BENCH_P99_MS (100), BENCH_STEP (5s),
# BENCH_CONNECTIONS (16), BENCH_CHUNK (50000 orgs per bulk-load statement), BENCH_PORT
# (18745), BENCH_OUT (docs/benchmarks.md), BENCH_NO_BUILD (0; 1 uses the release binaries
# in target/release as they are), BENCH_TIMEOUT (45m).
set -euo pipefail
# Byte order for sort and comm, and a decimal point for printf.
export LC_ALL=C

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [ "${1:-}" != "--inside" ]; then
  # The infrastructure is shared with whoever else uses the stack: started when missing,
  # never stopped. The run as a whole is bounded: whatever happens, it stops by itself.
  bash deploy/local/stack.sh infra >&2
  exec timeout -k 30s "${BENCH_TIMEOUT:-45m}" bash "$ROOT/loadtest/shard-bench.sh" --inside
fi

export SQLX_OFFLINE=true
ORGS="${BENCH_ORGS:-1000000}"
RUNS="${BENCH_RUNS:-3}"
BASELINE="${BENCH_BASELINE:-1}"
P99_MS="${BENCH_P99_MS:-100}"
STEP="${BENCH_STEP:-5s}"
CONNS="${BENCH_CONNECTIONS:-16}"
CHUNK="${BENCH_CHUNK:-50000}"
CP_PORT="${BENCH_PORT:-18745}"
OUT="${BENCH_OUT:-docs/benchmarks.md}"
DIR="$ROOT/.local/bench-shards"
LT="$ROOT/target/release/loadtest"
CP="$ROOT/target/release/control-plane"
REGION=us-east-1
SHARDS=4
FIRST_ID=1000000000
RANGES_PER_SHARD=4
RANGE_SIZE=$((ORGS / 10))
# Share of the orgs on each shard, in per mille: two loaded more than the other two.
SHARE=(270 270 230 230)
# Ranges in all for the second map measurement (the extra ones added straight in SQL).
MANY_RANGES=4000

RUN_ID="$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
CATALOG_DB="sybench_catalog_$RUN_ID"
SHARD_DB_PREFIX="sybench_shard_${RUN_ID}_"
NS="sybench$RUN_ID"
PREFIX="sybench$RUN_ID:"

step() { printf '==> %s  %s\n' "$(date +%T)" "$*" >&2; }
say() { printf '    %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

case "$ORGS" in '' | *[!0-9]*) die "BENCH_ORGS must be a whole number" ;; esac
[ "$ORGS" -ge 1000 ] && [ "$ORGS" -le 10000000 ] || die "BENCH_ORGS must be 1,000 to 10,000,000"
[ "$CP_PORT" -ge 18700 ] && [ "$CP_PORT" -le 18799 ] || die "BENCH_PORT must be within 18700-18799"

# shellcheck disable=SC1091
set -a; . "$ROOT/.local/stack.env"; set +a
PG_BASE="${PG_ADMIN_URL%/*}"
CATALOG_URL="$PG_BASE/$CATALOG_DB"
export CATALOG_URL

STARTED_PIDS=()
stop_pid() { # pid
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  set +e
  for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
  step "removing what the benchmark created (databases, streams, keys)"
  if [ -x "$LT" ]; then
    "$LT" delete-streams --nats "$NATS_US_URL" --prefix "${NS^^}_" >/dev/null 2>&1
    "$LT" delete-streams --nats "$NATS_US_URL" --prefix "KV_${NS}_" >/dev/null 2>&1
  fi
  if command -v redis-cli >/dev/null; then
    redis-cli -u "$REDIS_URL" --scan --pattern "${PREFIX}*" 2>/dev/null \
      | xargs -r -n 100 redis-cli -u "$REDIS_URL" del >/dev/null 2>&1
  fi
  psql -q "$PG_ADMIN_URL" -c "drop database if exists $CATALOG_DB with (force)" >/dev/null 2>&1
  for i in $(seq 0 $((SHARDS - 1))); do
    psql -q "$PG_ADMIN_URL" -c "drop database if exists ${SHARD_DB_PREFIX}$i with (force)" >/dev/null 2>&1
  done
  rm -f "$DIR/github-app.pem" "$DIR/jwt.pem"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
secret() { head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c "$1"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
meta() { printf '%s\t%s\n' "$1" "$2" >> "$DIR/meta.tsv"; }
first_line() { "$@" 2>&1 | head -n1; }
cat_sql() { psql -X -q -v ON_ERROR_STOP=1 "$CATALOG_URL" "$@" < /dev/null; }
shard_sql() { local i=$1; shift; psql -X -q -v ON_ERROR_STOP=1 "$PG_BASE/${SHARD_DB_PREFIX}$i" "$@" < /dev/null; }
busy() { # processes using 1 % of a core or more over 5 s
  top -b -n 2 -d 5 -w 200 | awk '/^top -/{n++} n==2 && $1 ~ /^[0-9]+$/ && $9+0 >= 1 {printf "%s%s %s%%", (k++ ? ", " : ""), $12, $9}' | head -c 400
}

port_free "$CP_PORT" || die "port $CP_PORT is taken: set BENCH_PORT to a free port within 18700-18799"
command -v psql >/dev/null || die "psql is needed (make up installs it)"

rm -rf "$DIR"
mkdir -p "$DIR/logs" "$DIR/criterion"
step "run $RUN_ID: $ORGS orgs over $SHARDS shards; results in ${DIR#"$ROOT"/}"

# ---------------------------------------------------------------- build

if [ "${BENCH_NO_BUILD:-0}" = 1 ]; then
  for b in "$CP" "$LT"; do [ -x "$b" ] || die "$b is missing (BENCH_NO_BUILD=1)"; done
else
  step "building the control plane and the load generator (release)"
  cargo build --release --quiet -p switchyard-control-plane -p switchyard-loadtest
fi

meta loadavg-before "$(cut -d' ' -f1-3 /proc/loadavg)"
meta busy-before "$(busy)"
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta cpu "$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
meta cores "$(nproc)"
meta memory "$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
meta kernel "$(uname -sr)"
meta rustc "$(first_line rustc -V)"
meta nats-server "$(first_line nats-server --version)"
meta postgres "$(psql -tA "$PG_ADMIN_URL" -c 'show server_version' | head -n1)"
meta postgres-settings "$(psql -tA "$PG_ADMIN_URL" -c "select string_agg(name || ' = ' || setting || coalesce(' ' || unit, ''), ', ' order by name) from pg_settings where name in ('shared_buffers', 'fsync', 'synchronous_commit', 'max_connections')")"
meta redis "$(first_line redis-server --version | cut -d' ' -f1-3)"
meta commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
meta orgs "$ORGS"
meta shards "$SHARDS"
meta ranges "$((SHARDS * RANGES_PER_SHARD))"
meta many-ranges "$MANY_RANGES"
meta range-size "$RANGE_SIZE"
meta p99-ms "$P99_MS"
meta step "$STEP"
meta connections "$CONNS"
meta runs "$RUNS"

# ---------------------------------------------------------------- the in-process cost (cargo bench)

step "cargo bench: ShardMap::locate and ShardMap::new for 4 to 40,000 ranges (criterion)"
rm -rf target/criterion/locate target/criterion/new
cargo bench --quiet -p switchyard-protocol --bench shardmap -- \
  --warm-up-time 1 --measurement-time 3 --noplot > "$DIR/cargo-bench.txt" 2>&1 \
  || { cat "$DIR/cargo-bench.txt" >&2; die "cargo bench failed"; }
grep -E '^(locate|new)/|time:' "$DIR/cargo-bench.txt" | sed 's/^/    /' >&2 || true
for est in target/criterion/locate/*/new/estimates.json target/criterion/new/*/new/estimates.json; do
  [ -f "$est" ] || continue
  n=$(basename "$(dirname "$(dirname "$est")")")
  g=$(basename "$(dirname "$(dirname "$(dirname "$est")")")")
  cp "$est" "$DIR/criterion/$g-$n.json"
done
meta criterion "$(grep -A2 '^name = "criterion"' Cargo.lock | sed -n 's/version = "\(.*\)"/\1/p' | head -n1), 1 s warm-up, 3 s measurement, release profile"
printf '%s\t%s\n' cargo-bench "cargo bench -p switchyard-protocol --bench shardmap -- --warm-up-time 1 --measurement-time 3 --noplot" >> "$DIR/commands.tsv"

# ---------------------------------------------------------------- databases, registry, control plane

step "creating the catalog and $SHARDS shard databases ($CATALOG_DB, ${SHARD_DB_PREFIX}0..$((SHARDS - 1)))"
psql -q "$PG_ADMIN_URL" -c "create database $CATALOG_DB" >/dev/null
for i in $(seq 0 $((SHARDS - 1))); do
  psql -q "$PG_ADMIN_URL" -c "create database ${SHARD_DB_PREFIX}$i" >/dev/null
done
umask 077
OPERATOR_TOKEN="sy_operator_$(secret 32)"
WEBHOOK_SECRET="$(secret 32)"
export OPERATOR_TOKEN WEBHOOK_SECRET
openssl genrsa -traditional -out "$DIR/github-app.pem" 2048 2>/dev/null
"$CP" keys generate | awk '/BEGIN PRIVATE KEY/,/END PRIVATE KEY/' > "$DIR/jwt.pem"
CFG="$DIR/control-plane.toml"
cat > "$CFG" <<CONF
# The benchmark's control plane: the committed defaults, but for what is below. No GitHub
# App behind it: onboarding does not call GitHub.
[region]
name = "$REGION"
[server]
listen = "127.0.0.1:$CP_PORT"
public_url = "http://127.0.0.1:$CP_PORT"
[database]
catalog_url = "$CATALOG_URL"
[nats]
url = "$NATS_US_URL"
namespace = "$NS"
[redis]
url = "$REDIS_URL"
key_prefix = "$PREFIX"
[auth]
operator_tokens = ["$OPERATOR_TOKEN"]
[auth.jwt]
signing_kid = "sybench-1"
signing_key = """
$(cat "$DIR/jwt.pem")
"""
[github]
webhook_secrets = ["$WEBHOOK_SECRET"]
[github.app]
app_id = 1
private_key_file = "$DIR/github-app.pem"
api_url = "http://127.0.0.1:9"
[github.install]
app_slug = "switchyard-bench"
web_url = "http://127.0.0.1:9"
[github.recovery]
enabled = false
[telemetry]
log_format = "json"
log_filter = "warn"
CONF
umask 022

step "registering the region, $SHARDS shards and $((SHARDS * RANGES_PER_SHARD)) ranges of $RANGE_SIZE ids (control-plane CLI), migrating"
"$CP" --config "$CFG" migrate >/dev/null
"$CP" --config "$CFG" regions add --name "$REGION" --api-url "http://127.0.0.1:$CP_PORT" >/dev/null
for i in $(seq 0 $((SHARDS - 1))); do
  "$CP" --config "$CFG" shards add --name "$REGION-$i" --region "$REGION" --dsn "$PG_BASE/${SHARD_DB_PREFIX}$i" >/dev/null
done
# Ranges are opened in turns, one per shard each time, so each shard's ranges interleave.
for k in $(seq 0 $((SHARDS * RANGES_PER_SHARD - 1))); do
  start=$((FIRST_ID + k * RANGE_SIZE))
  "$CP" --config "$CFG" shards add-range --shard "$REGION-$((k % SHARDS))" \
    --start "$start" --end "$((start + RANGE_SIZE))" >/dev/null
done
"$CP" --config "$CFG" migrate >/dev/null
"$CP" --config "$CFG" shards list 2>/dev/null | sed 's/^/    /' >&2 || true

NATS_PID=$(cat "$ROOT/.local/run/nats-us-east-1.pid")
PG_PID=$(head -n1 "$ROOT/.local/pg/data/postmaster.pid")
REDIS_PID=$(cat "$ROOT/.local/run/redis.pid")
CPURL="http://127.0.0.1:$CP_PORT"
CP_PID=

start_cp() { # name: starts the control plane, records its start-up time to /readyz
  local name=$1 t0
  t0=$(now_ms)
  "$CP" --config "$CFG" serve >> "$DIR/logs/control-plane.log" 2>&1 &
  CP_PID=$!
  STARTED_PIDS+=("$CP_PID")
  for _ in $(seq 1 1200); do
    if curl -fsS -o /dev/null "$CPURL/readyz" 2>/dev/null; then
      meta "startup-$name-ms" "$(($(now_ms) - t0))"
      say "control plane ready after $(($(now_ms) - t0)) ms (pid $CP_PID)"
      return 0
    fi
    kill -0 "$CP_PID" 2>/dev/null || die "the control plane exited (see ${DIR#"$ROOT"/}/logs/control-plane.log)"
    sleep 0.05
  done
  die "the control plane did not answer at $CPURL/readyz within 60 s"
}
stop_cp() {
  [ -n "$CP_PID" ] || return 0
  stop_pid "$CP_PID"
  # Forget it, so that the clean-up never signals a pid the system has since reused.
  local left=() pid
  for pid in "${STARTED_PIDS[@]}"; do [ "$pid" = "$CP_PID" ] || left+=("$pid"); done
  STARTED_PIDS=("${left[@]}")
  CP_PID=
}

placeholders() {
  sed -e "s#$ROOT/##g" -e "s#=$CP_PID\b#=\$CONTROL_PLANE_PID#g" -e "s#=$NATS_PID\b#=\$NATS_PID#g" \
    -e "s#=$PG_PID\b#=\$POSTGRES_PID#g" -e "s#=$REDIS_PID\b#=\$REDIS_PID#g"
}

# Per shard: ranges, ids handed out (`next_id − range_start`: the load placement compares),
# active orgs of its ranges in the catalog, tenant rows on the shard itself, active orgs
# without a tenant row, tenant rows without an active org, and orgs still `creating`.
placement() { # file
  local file=$1 i in_ranges
  : > "$file"
  for i in $(seq 0 $((SHARDS - 1))); do
    in_ranges="from org o join shard_range r on o.id >= r.range_start and o.id < r.range_end where r.shard = '$REGION-$i'"
    cat_sql -tA -c "select o.id $in_ranges and o.status = 'active'" | sort > "$DIR/active.ids"
    shard_sql "$i" -tA -c "select org_id from tenant" | sort > "$DIR/tenant.ids"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$REGION-$i" \
      "$(cat_sql -tA -c "select count(*) from shard_range where shard = '$REGION-$i'")" \
      "$(cat_sql -tA -c "select coalesce(sum(next_id - range_start), 0) from shard_range where shard = '$REGION-$i'")" \
      "$(wc -l < "$DIR/active.ids")" "$(wc -l < "$DIR/tenant.ids")" \
      "$(comm -23 "$DIR/active.ids" "$DIR/tenant.ids" | wc -l)" \
      "$(comm -13 "$DIR/active.ids" "$DIR/tenant.ids" | wc -l)" \
      "$(cat_sql -tA -c "select count(*) $in_ranges and o.status = 'creating'")" >> "$file"
  done
  rm -f "$DIR/active.ids" "$DIR/tenant.ids"
}

# Transactions committed so far by the databases of everyone else on the PostgreSQL server.
other_commits() {
  psql -X -tA "$PG_ADMIN_URL" -c "select coalesce(sum(xact_commit), 0) from pg_stat_database
    where datname is not null and position('$RUN_ID' in datname) = 0" < /dev/null
}

onboarding() { # label run
  local label=$1 run=$2
  local args=(search --scenario onboarding --target "$CPURL" --region "$REGION"
    --connections "$CONNS" --step "$STEP" --p99-ms "$P99_MS" --start-rate 20 --max-rate 2000
    --resolution 0.1 --max-steps 9 --warmup 2s --cooldown 2s --timeout 10s --drain 10s
    --watch loadtest=self --watch "control-plane=$CP_PID" --watch "postgres=$PG_PID")
  if [ "$run" = 1 ] && [ "$label" = loaded ]; then
    printf '%s\t%s\n' onboarding "loadtest ${args[*]}" | placeholders >> "$DIR/commands.tsv"
  fi
  step "onboarding ($label catalog), run $run/$RUNS: the highest rate with p99 < $P99_MS ms"
  local c0 t0
  c0=$(other_commits)
  t0=$(now_ms)
  "$LT" "${args[@]}" --out "$DIR/onboarding-$label-$run.json" > "$DIR/onboarding-$label-$run.txt"
  sed 's/^/    /' "$DIR/onboarding-$label-$run.txt" >&2
  # What other databases on the same PostgreSQL committed meanwhile (each commit an fsync:
  # the onboarding's own commits wait behind them).
  meta "others-$label-$run" "$(awk -v c="$(($(other_commits) - c0))" -v t="$(($(now_ms) - t0))" 'BEGIN {printf "%.0f", c * 1000 / t}')"
  say "other databases committed $(grep "^others-$label-$run" "$DIR/meta.tsv" | cut -f2) transactions/s meanwhile"
}

# ---------------------------------------------------------------- onboarding, empty catalog

start_cp empty
if [ "$BASELINE" = 1 ]; then
  for run in $(seq 1 "$RUNS"); do onboarding empty "$run"; done
fi
stop_cp
placement "$DIR/placement-empty.tsv"

# ---------------------------------------------------------------- bulk load

step "bulk-loading the catalog and the shards to $ORGS orgs (chunks of $CHUNK; the control plane is stopped)"
# Onboarding's triggers bump authz_version once per membership and key: set it at once.
cat_sql -c "alter table membership disable trigger membership_changed;
            alter table api_key disable trigger api_key_changed;"
targets=""
for i in $(seq 0 $((SHARDS - 1))); do
  targets+="${targets:+, }('$REGION-$i', $((ORGS * SHARE[i] / 1000)))"
done
# What each range hands out now: each shard's missing orgs, from its ranges in order.
plan=$(cat_sql -tA -F ' ' -c "
  with t(shard, target) as (values $targets),
  used as (select shard, sum(next_id - range_start) as u from shard_range group by shard),
  r as (select range_start, shard, next_id, range_end - next_id as room,
               coalesce(sum(range_end - next_id) over (partition by shard order by range_start
                        rows between unbounded preceding and 1 preceding), 0) as before
        from shard_range)
  select r.range_start, r.shard, r.next_id, greatest(0, least(r.room, t.target - used.u - r.before)) as n
  from r join t using (shard) join used using (shard)
  order by r.range_start")
total_new=$(awk '{s += $4} END {print s + 0}' <<< "$plan")
existing=$(cat_sql -tA -c "select count(*) from org")
say "$existing orgs already there (onboarded through the API); loading $total_new more"
t_load=$(now_ms)
done_n=0
while read -r rstart shard next n; do
  [ "${n:-0}" -gt 0 ] || continue
  i=${shard##*-}
  lo=$next
  end=$((next + n))
  while [ "$lo" -lt "$end" ]; do
    hi=$((lo + CHUNK)); [ "$hi" -gt "$end" ] && hi=$end
    # The shard's rows and the catalog's rows of the chunk at the same time (two cores).
    shard_sql "$i" -c "
      begin;
      set local synchronous_commit = off;
      insert into tenant (org_id, slug) select g, 'bulk-' || g from generate_series($lo, $((hi - 1))) g;
      insert into trigger_rule (org_id, id, position, event, action, label, kind)
        select g, 'label-bot', 0, 'issues', 'labeled', 'bot', 'agent' from generate_series($lo, $((hi - 1))) g;
      insert into audit_log (org_id, actor, action, target, details)
        select g, 'bulk-load', 'org.create', 'bulk-' || g, '{\"rules\": 1}' from generate_series($lo, $((hi - 1))) g;
      commit;" &
    shard_job=$!
    cat_sql -c "
      begin;
      set local synchronous_commit = off;
      insert into org (id, slug, name, region, plan, status, authz_version)
        select g, 'bulk-' || g, 'Bulk org ' || g, '$REGION', 'team', 'active', 3 from generate_series($lo, $((hi - 1))) g;
      insert into app_user (id, email)
        select 'usr_bulk' || g, 'owner@bulk-' || g || '.example' from generate_series($lo, $((hi - 1))) g;
      insert into membership (org_id, user_id, role)
        select g, 'usr_bulk' || g, 'owner' from generate_series($lo, $((hi - 1))) g;
      insert into api_key (id, org_id, user_id, name, role, prefix, secret_hash)
        select 'key_bulk' || g, g, 'usr_bulk' || g, 'owner', 'owner', 'bk' || lpad(to_hex(g), 8, '0'),
               sha256(('bulk' || g)::bytea) from generate_series($lo, $((hi - 1))) g;
      update shard_range set next_id = $hi where range_start = $rstart;
      commit;"
    wait "$shard_job" || die "loading shard $shard failed"
    done_n=$((done_n + hi - lo))
    elapsed=$(($(now_ms) - t_load))
    say "$(printf '%9d / %d orgs  %5.1f s  %6.0f orgs/s  (range %d on %s)' "$done_n" "$total_new" \
      "$(awk -v e="$elapsed" 'BEGIN {print e / 1000}')" \
      "$(awk -v n="$done_n" -v e="$elapsed" 'BEGIN {print (e > 0 ? n * 1000 / e : 0)}')" "$rstart" "$shard")"
    lo=$hi
  done
done <<< "$plan"
cat_sql -c "alter table membership enable trigger membership_changed;
            alter table api_key enable trigger api_key_changed;"
meta bulk-insert-ms "$(($(now_ms) - t_load))"
meta bulk-orgs "$total_new"
step "vacuum (analyze) of the catalog and the shards, as autovacuum would have left them"
t_vac=$(now_ms)
cat_sql -c "vacuum (analyze)" &
vac=$!
for i in $(seq 0 $((SHARDS - 1))); do shard_sql "$i" -c "vacuum (analyze)"; done
wait "$vac"
meta bulk-vacuum-ms "$(($(now_ms) - t_vac))"
meta catalog-size "$(psql -tA "$PG_ADMIN_URL" -c "select pg_size_pretty(pg_database_size('$CATALOG_DB'))")"
meta shard-size "$(psql -tA "$PG_ADMIN_URL" -c "select pg_size_pretty(pg_database_size('${SHARD_DB_PREFIX}0'))")"
meta catalog-orgs "$(cat_sql -tA -c "select count(*) from org")"
say "catalog $(grep '^catalog-size' "$DIR/meta.tsv" | cut -f2), first shard $(grep '^shard-size' "$DIR/meta.tsv" | cut -f2)"

# ---------------------------------------------------------------- the shard map on the loaded catalog

shard_map() { # name run
  local args=(shard-map --loads 20 --batches 10 --lookups 1000000 --check 2000)
  if [ "$2" = 1 ]; then
    printf '%s\t%s\n' "$1" "CATALOG_URL=… loadtest ${args[*]}" >> "$DIR/commands.tsv"
  fi
  step "shard map ($1), run $2/3: load from the catalog, route per lookup"
  "$LT" "${args[@]}" --out "$DIR/$1-$2.json" > "$DIR/$1-$2.txt"
  sed 's/^/    /' "$DIR/$1-$2.txt" >&2
}
for run in 1 2 3; do shard_map map "$run"; done

# ---------------------------------------------------------------- onboarding with the orgs loaded

start_cp loaded
placement "$DIR/placement-before.tsv"
for run in $(seq 1 "$RUNS"); do onboarding loaded "$run"; done
stop_cp
placement "$DIR/placement-after.tsv"

step "placement of the orgs onboarded with $ORGS orgs loaded"
paste "$DIR/placement-before.tsv" "$DIR/placement-after.tsv" | awk -F'\t' '{
  printf "    %s  ids handed out %d → %d (+%d); active orgs %d, tenant rows %d, active orgs without a tenant %d, tenants without an active org %d, creating %d\n",
    $1, $3, $11, $11 - $3, $12, $13, $14, $15, $16 }' >&2
# The orgs must have gone to the least-loaded shards (2 and 3), about evenly, and every
# active org must have its tenant row on the shard of its range.
verdict=$(paste "$DIR/placement-before.tsv" "$DIR/placement-after.tsv" | awk -F'\t' -v c="$CONNS" '
  { grew[NR] = $11 - $3; missing[NR] = $14; total += $11 - $3 }
  END {
    ok = 1; why = ""
    if (grew[1] != 0 || grew[2] != 0) { ok = 0; why = why " orgs placed on the more-loaded shards 0/1;" }
    if (grew[3] == 0 || grew[4] == 0) { ok = 0; why = why " one of the least-loaded shards got none;" }
    d = grew[3] - grew[4]; if (d < 0) d = -d
    if (d > c + total / 100) { ok = 0; why = why " shards 2 and 3 differ by " d ";" }
    for (i = 1; i <= 4; i++) if (missing[i] != 0) { ok = 0; why = why " " missing[i] " active orgs of shard " i - 1 " have no tenant row;" }
    print (ok ? "ok" : "NOT OK:" why)
  }')
meta placement "$verdict"
say "placement: $verdict"

# ---------------------------------------------------------------- a map of many ranges

step "adding $((MANY_RANGES - SHARDS * RANGES_PER_SHARD)) closed ranges (SQL) to measure a map of $MANY_RANGES ranges"
cat_sql -c "
  insert into shard_range (range_start, range_end, shard, next_id, open)
  select s, s + 1000, '$REGION-' || (k % $SHARDS), s, false
  from generate_series(0, $((MANY_RANGES - SHARDS * RANGES_PER_SHARD - 1))) k,
       lateral (select $((FIRST_ID + SHARDS * RANGES_PER_SHARD * RANGE_SIZE)) + k::bigint * 1000 as s) x"
for run in 1 2 3; do shard_map map-many "$run"; done

meta loadavg-after "$(cut -d' ' -f1-3 /proc/loadavg)"
"$LT" section --name shards --dir "$DIR" --out "$OUT"
