#!/usr/bin/env bash
# The workers and tenancy benchmarks: `make bench-workers` and `make bench-tenancy`. Each
# writes its own section of docs/benchmarks.md (between `<!-- section:NAME -->` markers),
# leaving the rest of the file — `make bench`'s report — as it is.
#
#   loadtest/worker-bench.sh workers   webhook 202 → job running at steady rates with a
#                                      no-op executor, and the worker's overhead per job
#                                      (about 4 minutes once built)
#   loadtest/worker-bench.sh tenancy   the authorization decision (cargo bench, criterion)
#                                      and authorized GET /v1/orgs/{org} at a fixed rate
#   loadtest/worker-bench.sh all       both
#
# What it uses and what it leaves:
# - The local stack's PostgreSQL, NATS (us-east-1) and Redis. If they are not running it
#   starts them and stops them again at the end (deploy/local/stack.sh with-infra); running
#   ones are left running. The stack's own control planes and workers are not touched.
# - A release control plane of its own (and, for workers, a release worker with the no-op
#   executor `true` and GitHub effects off) on ports from BENCH_PORT_BASE (18700), with its
#   own catalog and shard databases (dropped at the end), its own NATS namespace (`benchwk`,
#   streams deleted at the end), Redis key prefix (keys deleted) and workspace directory;
#   a GitHub emulator of its own (for binding the org's installation).
# Results go to .local/bench-workers/; the sections to docs/benchmarks.md.
#
# Settings (environment): BENCH_PORT_BASE (18700), BENCH_RATES (20,50,100), BENCH_PHASE (30s),
# BENCH_API_RATE (200), BENCH_API_RUNS (3), BENCH_OUT (docs/benchmarks.md), BENCH_NO_BUILD (0; 1
# uses the release binaries already in target/release as they are).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WHAT="${1:-all}"
case "$WHAT" in workers | tenancy | all) ;; *)
  echo "usage: $0 [workers|tenancy|all]" >&2
  exit 2
  ;;
esac

if [ "${2:-}" != "--inside" ]; then
  # Bounded as a whole: whatever happens, it stops by itself.
  exec bash deploy/local/stack.sh with-infra -- \
    timeout -k 30s "${BENCH_TIMEOUT:-30m}" bash "$ROOT/loadtest/worker-bench.sh" "$WHAT" --inside
fi

export SQLX_OFFLINE=true
BASE="${BENCH_PORT_BASE:-18700}"
RATES="${BENCH_RATES:-20,50,100}"
PHASE="${BENCH_PHASE:-30s}"
API_RATE="${BENCH_API_RATE:-200}"
API_RUNS="${BENCH_API_RUNS:-3}"
OUT="${BENCH_OUT:-docs/benchmarks.md}"
CP_PORT=$((BASE + 80))
GH_PORT=$((BASE + 70))
WK_PORT=$((BASE + 90))
DIR="$ROOT/.local/bench-workers"
LT="$ROOT/target/release/loadtest"
CP="$ROOT/target/release/control-plane"
WK="$ROOT/target/release/worker"
GH="$ROOT/target/debug/github-emulator"
EXAMPLES="$ROOT/tests/fixtures/node_modules/@octokit/webhooks-examples/api.github.com/index.json"
NS=benchwk
PREFIX=sybenchwk:
CATALOG_DB=switchyard_benchwk_catalog
SHARD_DB=switchyard_benchwk_shard_0
WARMUP_JOBS=20
# The cargo bench's loaded rules (control-plane/benches/authz.rs: ORGS × KEYS_PER_ORG).
AUTHZ_ORGS=5000
AUTHZ_KEYS=2

step() { printf '==> %s  %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# shellcheck disable=SC1091
set -a; . "$ROOT/.local/stack.env"; set +a
PG_BASE="${PG_ADMIN_URL%/*}"

STARTED_PIDS=()
cleanup() {
  local rc=$?
  set +e
  for pid in "${STARTED_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${STARTED_PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  done
  if [ -x "$LT" ]; then
    "$LT" delete-streams --nats "$NATS_US_URL" --prefix BENCHWK_ >/dev/null 2>&1
    "$LT" delete-streams --nats "$NATS_US_URL" --prefix KV_benchwk_ >/dev/null 2>&1
  fi
  if command -v redis-cli >/dev/null; then
    redis-cli -u "$REDIS_URL" --scan --pattern "${PREFIX}*" 2>/dev/null \
      | xargs -r -n 100 redis-cli -u "$REDIS_URL" del >/dev/null 2>&1
  fi
  psql -q "$PG_ADMIN_URL" -c "drop database if exists $CATALOG_DB with (force)" >/dev/null 2>&1
  psql -q "$PG_ADMIN_URL" -c "drop database if exists $SHARD_DB with (force)" >/dev/null 2>&1
  rm -rf "$DIR/workspaces" "$DIR/github-app.pem" "$DIR/jwt.pem"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_http() { # url what
  for _ in $(seq 1 150); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  die "$2 did not answer at $1 (see $DIR/logs/)"
}
wait_port() { # port what
  for _ in $(seq 1 150); do
    port_free "$1" || return 0
    sleep 0.2
  done
  die "$2 did not listen on port $1 (see $DIR/logs/)"
}
secret() { head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c "$1"; }

for p in $CP_PORT $GH_PORT $WK_PORT; do
  port_free "$p" || die "port $p is taken: set BENCH_PORT_BASE to a free range"
done
command -v psql >/dev/null || die "psql is needed (make up installs it)"

rm -rf "$DIR"
mkdir -p "$DIR/logs" "$DIR/workspaces"

# ---------------------------------------------------------------- build

if [ "${BENCH_NO_BUILD:-0}" = 1 ]; then
  for b in "$CP" "$WK" "$LT"; do [ -x "$b" ] || die "$b is missing (BENCH_NO_BUILD=1)"; done
else
  step "building the control plane, the worker and the load generator (release)"
  cargo build --release --quiet -p switchyard-control-plane -p switchyard-worker -p switchyard-loadtest
fi
if [ ! -x "$GH" ]; then
  step "building the GitHub emulator"
  cargo build --quiet -p switchyard-tests --bin github-emulator
fi
if [ ! -f tests/fixtures/node_modules/.package-lock.json ]; then
  step "installing GitHub's webhook examples (npm)"
  npm ci --prefix tests/fixtures --no-audit --no-fund --silent
fi

meta() { printf '%s\t%s\n' "$1" "$2" >> "$DIR/meta.tsv"; }
first_line() { "$@" 2>&1 | head -n1; }
meta loadavg-before "$(cut -d' ' -f1-3 /proc/loadavg)"
meta busy-before "$(top -b -n 2 -d 5 -w 200 | awk '/^top -/{n++} n==2 && $1 ~ /^[0-9]+$/ && $9+0 >= 1 {printf "%s%s %s%%", (k++ ? ", " : ""), $12, $9}' | head -c 400)"
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta cpu "$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
meta cores "$(nproc)"
meta memory "$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
meta kernel "$(uname -sr)"
meta rustc "$(first_line rustc -V)"
meta nats-server "$(first_line nats-server --version)"
meta postgres "$(psql -tA "$PG_ADMIN_URL" -c 'show server_version' | head -n1)"
meta redis "$(first_line redis-server --version | cut -d' ' -f1-3)"
meta commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
meta worker-slots 4
meta warmup-jobs "$WARMUP_JOBS"
meta authz-orgs "$AUTHZ_ORGS"
meta authz-members "$AUTHZ_KEYS"
meta authz-grants "$((AUTHZ_ORGS * AUTHZ_KEYS))"

# ---------------------------------------------------------------- tenancy: the cargo bench

if [ "$WHAT" != workers ]; then
  step "cargo bench: the authorization decision (criterion)"
  rm -rf target/criterion/authz
  cargo bench --quiet -p switchyard-control-plane --bench authz -- \
    --warm-up-time 2 --measurement-time 5 --noplot > "$DIR/cargo-bench.txt" 2>&1 \
    || { cat "$DIR/cargo-bench.txt" >&2; die "cargo bench failed"; }
  sed 's/^/    /' "$DIR/cargo-bench.txt" >&2
  mkdir -p "$DIR/criterion"
  for est in target/criterion/authz/*/new/estimates.json; do
    [ -f "$est" ] || continue
    id=$(basename "$(dirname "$(dirname "$est")")")
    cp "$est" "$DIR/criterion/$id.json"
  done
  meta criterion "$(grep -A2 '^name = "criterion"' Cargo.lock | sed -n 's/version = "\(.*\)"/\1/p' | head -n1), 2 s warm-up, 5 s measurement, release profile"
  printf '%s\t%s\n' cargo-bench "cargo bench -p switchyard-control-plane --bench authz -- --warm-up-time 2 --measurement-time 5 --noplot" >> "$DIR/commands.tsv"
fi

# ---------------------------------------------------------------- the benchmark's services

step "creating the benchmark's databases, keys and configuration"
for db in $CATALOG_DB $SHARD_DB; do
  psql -q "$PG_ADMIN_URL" -c "drop database if exists $db with (force)" >/dev/null
  psql -q "$PG_ADMIN_URL" -c "create database $db" >/dev/null
done
umask 077
OPERATOR_TOKEN="sy_operator_$(secret 32)"
WEBHOOK_SECRET="$(secret 32)"
SHARD_DATABASE_URL="$PG_BASE/$SHARD_DB"
export OPERATOR_TOKEN WEBHOOK_SECRET SHARD_DATABASE_URL
openssl genrsa -traditional -out "$DIR/github-app.pem" 2048 2>/dev/null
openssl rsa -in "$DIR/github-app.pem" -pubout -out "$DIR/github-app.pub.pem" 2>/dev/null
"$CP" keys generate | awk '/BEGIN PRIVATE KEY/,/END PRIVATE KEY/' > "$DIR/jwt.pem"
CFG="$DIR/control-plane.toml"
cat > "$CFG" <<CONF
# The benchmark's control plane: the committed defaults, but for what is below.
[region]
name = "us-east-1"
[server]
listen = "127.0.0.1:$CP_PORT"
public_url = "http://127.0.0.1:$CP_PORT"
[database]
catalog_url = "$PG_BASE/$CATALOG_DB"
[nats]
url = "$NATS_US_URL"
namespace = "$NS"
[redis]
url = "$REDIS_URL"
key_prefix = "$PREFIX"
[auth]
operator_tokens = ["$OPERATOR_TOKEN"]
[auth.jwt]
signing_kid = "benchwk-1"
signing_key = """
$(cat "$DIR/jwt.pem")
"""
[github]
webhook_secrets = ["$WEBHOOK_SECRET"]
[github.app]
app_id = 1
private_key_file = "$DIR/github-app.pem"
api_url = "http://127.0.0.1:$GH_PORT"
[github.install]
app_slug = "switchyard-bench"
web_url = "http://127.0.0.1:$GH_PORT"
[github.recovery]
enabled = false
# The benchmark measures the API, not the org's API rate limit (100 requests/s on enterprise).
[plans.enterprise]
api_rate_per_minute = 100000000
api_burst = 100000000
api_key_rate_per_minute = 100000000
api_key_burst = 100000000
[plans.team]
api_rate_per_minute = 100000000
api_burst = 100000000
api_key_rate_per_minute = 100000000
api_key_burst = 100000000
[telemetry]
log_format = "json"
log_filter = "warn"
CONF
WCFG="$DIR/worker.toml"
cat > "$WCFG" <<CONF
# The benchmark's worker: the committed defaults, but for what is below. GitHub effects are
# off (app_id = 0: no token, no clone, no comment) and the executor is a no-op.
[worker]
region = "us-east-1"
id = "benchwk-1"
ops_listen = "127.0.0.1:$WK_PORT"
workspace_root = "$DIR/workspaces"
[database]
catalog_url = "$PG_BASE/$CATALOG_DB"
[nats]
url = "$NATS_US_URL"
namespace = "$NS"
[redis]
url = "$REDIS_URL"
key_prefix = "$PREFIX"
[github.app]
app_id = 0
[telemetry]
log_format = "json"
log_filter = "warn"
[executors.default]
type = "command"
command = ["true"]
timeout = "1m"
CONF
umask 022

step "migrating and registering the region, shard and id range"
"$CP" --config "$CFG" migrate >/dev/null
"$CP" --config "$CFG" regions add --name us-east-1 --api-url "http://127.0.0.1:$CP_PORT" >/dev/null
"$CP" --config "$CFG" shards add --name us-east-1-0 --region us-east-1 --dsn "$SHARD_DATABASE_URL" >/dev/null
"$CP" --config "$CFG" shards add-range --shard us-east-1-0 --start 1000000000 --end 2000000000 >/dev/null
"$CP" --config "$CFG" migrate >/dev/null

step "starting the GitHub emulator and the control plane"
EMULATOR_LISTEN="127.0.0.1:$GH_PORT" EMULATOR_APP_ID=1 EMULATOR_APP_SLUG=switchyard-bench \
  EMULATOR_WEBHOOK_SECRET="$WEBHOOK_SECRET" \
  "$GH" --public-key "$DIR/github-app.pub.pem" > "$DIR/logs/github-emulator.log" 2>&1 &
STARTED_PIDS+=($!)
"$CP" --config "$CFG" serve > "$DIR/logs/control-plane.log" 2>&1 &
CP_PID=$!
STARTED_PIDS+=($CP_PID)
wait_port "$GH_PORT" "the GitHub emulator"
wait_http "http://127.0.0.1:$CP_PORT/readyz" "the control plane"

NATS_PID=$(cat "$ROOT/.local/run/nats-us-east-1.pid")
PG_PID=$(head -n1 "$ROOT/.local/pg/data/postmaster.pid")
REDIS_PID=$(cat "$ROOT/.local/run/redis.pid")
CPURL="http://127.0.0.1:$CP_PORT"
WATCH_CP=(--watch "control-plane=$CP_PID" --watch "nats-server=$NATS_PID" --watch "postgres=$PG_PID" --watch "redis=$REDIS_PID")

placeholders() {
  sed -e "s#$ROOT/##g" -e "s#=$CP_PID\b#=\$CONTROL_PLANE_PID#g" -e "s#=$NATS_PID\b#=\$NATS_PID#g" \
    -e "s#=$PG_PID\b#=\$POSTGRES_PID#g" -e "s#=$REDIS_PID\b#=\$REDIS_PID#g" \
    -e "s#--worker-pid $WK_PID_FOR_SED\b#--worker-pid \$WORKER_PID#g"
}
WK_PID_FOR_SED=none

# ---------------------------------------------------------------- tenancy: authorized reads

if [ "$WHAT" != workers ]; then
  for run in $(seq 1 "$API_RUNS"); do
    args=(run --scenario api-reads --routes org --target "$CPURL" --rate "$API_RATE" --duration 10s
      --warmup 2s --connections 16 --quiet --watch loadtest=self "${WATCH_CP[@]}")
    [ "$run" = 1 ] && printf '%s\t%s\n' "api-org" "loadtest ${args[*]}" | placeholders >> "$DIR/commands.tsv"
    step "authorized GET /v1/orgs/{org} at $API_RATE/s, run $run/$API_RUNS"
    "$LT" "${args[@]}" --out "$DIR/api-org-$run.json" > "$DIR/api-org-$run.txt"
    sed 's/^/    /' "$DIR/api-org-$run.txt" >&2
  done
fi

# ---------------------------------------------------------------- workers

if [ "$WHAT" != tenancy ]; then
  step "starting the worker (no-op executor, GitHub effects off)"
  "$WK" --config "$WCFG" run > "$DIR/logs/worker.log" 2>&1 &
  WK_PID=$!
  STARTED_PIDS+=($WK_PID)
  WK_PID_FOR_SED=$WK_PID
  wait_http "http://127.0.0.1:$WK_PORT/readyz" "the worker"
  args=(jobs --target "$CPURL" --rates "$RATES" --duration "$PHASE" --settle 120s
    --warmup-jobs "$WARMUP_JOBS" --examples "$EXAMPLES" --worker-pid "$WK_PID"
    --watch loadtest=self "${WATCH_CP[@]}")
  printf '%s\t%s\n' "jobs" "loadtest ${args[*]}" | placeholders >> "$DIR/commands.tsv"
  step "webhook 202 → job running at $RATES/s, $PHASE each"
  "$LT" "${args[@]}" --out "$DIR/jobs.json" > "$DIR/jobs.txt"
  sed 's/^/    /' "$DIR/jobs.txt" >&2
fi

meta loadavg-after "$(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$WHAT" != tenancy ]; then
  "$LT" section --name workers --dir "$DIR" --out "$OUT"
fi
if [ "$WHAT" != workers ]; then
  "$LT" section --name tenancy --dir "$DIR" --out "$OUT"
fi
