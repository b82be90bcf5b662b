#!/usr/bin/env bash
# The benchmark suite behind `make bench`: measures Switchyard's webhook intake against its
# ceilings (raw JetStream, the HTTP framework's no-op handler) and a peer (a minimal Probot
# app), plus the org API, in the same run, three times; then writes docs/benchmarks.md.
#
#   loadtest/bench.sh            everything (about 10 minutes once built)
#
# What it uses and what it leaves:
# - The local stack's PostgreSQL, NATS (us-east-1) and Redis. If they are not running it
#   starts them and stops them again at the end (deploy/local/stack.sh with-infra); running
#   ones are left running. The stack's own control planes and workers are not touched.
# - A control plane of its own (release build) on ports from BENCH_PORT_BASE (18600), with
#   its own catalog and shard databases (dropped at the end), its own NATS namespace
#   (`bench`, streams deleted at the end) and Redis key prefix, and logs at `warn`.
# - A GitHub emulator of its own (for binding installations), the no-op server and the
#   Probot peer (npm ci under loadtest/peers/probot).
# Results (JSON per measurement) go to .local/bench/; the report to docs/benchmarks.md.
#
# Settings (environment): BENCH_RUNS (3), BENCH_PORT_BASE (18600), BENCH_CONNECTIONS (16),
# BENCH_STEP (3s), BENCH_API_RATE (200), BENCH_CP_THREADS (1: the control plane's runtime
# threads, 0 = one per core), BENCH_CP_EXTRA (a TOML file appended to the benchmark control
# plane's configuration, to try a setting; named in the report), BENCH_OUT
# (docs/benchmarks.md), and BENCH_ONLY: a
# comma-separated subset of the measurements (jetstream, noop, intake, probot, api-reads,
# onboarding, mix, profile) to run and print, writing no report — for working on one figure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${BENCH_CP_EXTRA:-}" ]; then
  BENCH_CP_EXTRA="$(realpath -- "$BENCH_CP_EXTRA")"
  export BENCH_CP_EXTRA
fi
cd "$ROOT"

if [ "${1:-}" != "--inside" ]; then
  # Bounded as a whole: whatever happens, the suite stops by itself (and with-infra then
  # stops the infrastructure it started, if any).
  exec bash deploy/local/stack.sh with-infra -- \
    timeout -k 30s "${BENCH_TIMEOUT:-40m}" bash "$ROOT/loadtest/bench.sh" --inside
fi

export SQLX_OFFLINE=true
RUNS="${BENCH_RUNS:-3}"
BASE="${BENCH_PORT_BASE:-18600}"
CONNS="${BENCH_CONNECTIONS:-16}"
STEP="${BENCH_STEP:-3s}"
API_RATE="${BENCH_API_RATE:-200}"
# Runtime threads of the control plane under test: 1, as the local stack runs it (its cores
# are shared with NATS, PostgreSQL and the generator); BENCH_CP_THREADS=0 for one per core.
CP_THREADS="${BENCH_CP_THREADS:-1}"
OUT="${BENCH_OUT:-docs/benchmarks.md}"
CP_EXTRA="${BENCH_CP_EXTRA:-}"
[ -z "$CP_EXTRA" ] || [ -f "$CP_EXTRA" ] || { echo "error: BENCH_CP_EXTRA: no file $CP_EXTRA" >&2; exit 1; }
ONLY="${BENCH_ONLY:-}"
CP_PORT=$((BASE + 80))
GH_PORT=$((BASE + 70))
NOOP_PORT=$((BASE + 13))
PROBOT_PORT=$((BASE + 14))
DIR="$ROOT/.local/bench"
LT="$ROOT/target/release/loadtest"
CP="$ROOT/target/release/control-plane"
GH="$ROOT/target/debug/github-emulator"
EXAMPLES="$ROOT/tests/fixtures/node_modules/@octokit/webhooks-examples/api.github.com/index.json"
NS=bench
CATALOG_DB=switchyard_bench_catalog
SHARD_DB=switchyard_bench_shard_0

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
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  done
  if [ -x "$LT" ]; then
    "$LT" delete-streams --nats "$NATS_US_URL" --prefix BENCH_ >/dev/null 2>&1
    "$LT" delete-streams --nats "$NATS_US_URL" --prefix KV_bench_ >/dev/null 2>&1
  fi
  if command -v redis-cli >/dev/null; then
    redis-cli -u "$REDIS_URL" --scan --pattern 'sybench:*' 2>/dev/null \
      | xargs -r -n 100 redis-cli -u "$REDIS_URL" del >/dev/null 2>&1
  fi
  psql -q "$PG_ADMIN_URL" -c "drop database if exists $CATALOG_DB with (force)" >/dev/null 2>&1
  psql -q "$PG_ADMIN_URL" -c "drop database if exists $SHARD_DB with (force)" >/dev/null 2>&1
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

for p in $CP_PORT $GH_PORT $NOOP_PORT $PROBOT_PORT; do
  port_free "$p" || die "port $p is taken: set BENCH_PORT_BASE to a free range"
done
command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed for the Probot peer"
command -v psql >/dev/null || die "psql is needed (make up installs it)"

rm -rf "$DIR"
mkdir -p "$DIR/logs"

# ---------------------------------------------------------------- build and install

step "building the control plane and the load generator (release)"
cargo build --release --quiet -p switchyard-control-plane -p switchyard-loadtest
if [ ! -x "$GH" ]; then
  step "building the GitHub emulator"
  cargo build --quiet -p switchyard-tests --bin github-emulator
fi
if [ ! -f tests/fixtures/node_modules/.package-lock.json ]; then
  step "installing GitHub's webhook examples (npm)"
  npm ci --prefix tests/fixtures --no-audit --no-fund --silent
fi
PEER="$ROOT/loadtest/peers/probot"
if [ ! -f "$PEER/node_modules/.package-lock.json" ] || [ "$PEER/package-lock.json" -nt "$PEER/node_modules/.package-lock.json" ]; then
  step "installing the Probot peer (npm ci)"
  npm ci --prefix "$PEER" --no-audit --no-fund --silent --loglevel=error
fi

# ---------------------------------------------------------------- the benchmark's control plane

step "creating the benchmark's databases, keys and configuration"
for db in $CATALOG_DB $SHARD_DB; do
  psql -q "$PG_ADMIN_URL" -c "drop database if exists $db with (force)" >/dev/null
  psql -q "$PG_ADMIN_URL" -c "create database $db" >/dev/null
done
umask 077
OPERATOR_TOKEN="sy_operator_$(secret 32)"
WEBHOOK_SECRET="$(secret 32)"
export OPERATOR_TOKEN WEBHOOK_SECRET
openssl genrsa -traditional -out "$DIR/github-app.pem" 2048 2>/dev/null
openssl rsa -in "$DIR/github-app.pem" -pubout -out "$DIR/github-app.pub.pem" 2>/dev/null
# Probot needs an App id and a private key to start; this throwaway one never reaches GitHub.
openssl genrsa -traditional -out "$DIR/probot.pem" 2048 2>/dev/null
"$CP" keys generate | awk '/BEGIN PRIVATE KEY/,/END PRIVATE KEY/' > "$DIR/jwt.pem"
CFG="$DIR/control-plane.toml"
cat > "$CFG" <<CONF
# The benchmark's control plane: the committed defaults, but for what is below.
[region]
name = "us-east-1"
[server]
listen = "127.0.0.1:$CP_PORT"
public_url = "http://127.0.0.1:$CP_PORT"
worker_threads = $CP_THREADS
[database]
catalog_url = "$PG_BASE/$CATALOG_DB"
[nats]
url = "$NATS_US_URL"
namespace = "$NS"
[redis]
url = "$REDIS_URL"
key_prefix = "sybench:"
[auth]
operator_tokens = ["$OPERATOR_TOKEN"]
[auth.jwt]
signing_kid = "bench-1"
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
# Delivery recovery asks GitHub for failed deliveries once a minute: not part of intake.
[github.recovery]
enabled = false
# The benchmark's org measures intake, not its plan's webhook rate limit: without this, every
# delivery past the plan's burst would be answered 202 as rate_limited, without its jobs.
[plans.enterprise]
webhook_rate_per_minute = 100000000
webhook_burst = 100000000
# Likewise the API scenarios measure the API, not the org's API rate limit (429 above it).
api_rate_per_minute = 100000000
api_burst = 100000000
api_key_rate_per_minute = 100000000
api_key_burst = 100000000
[plans.team]
api_rate_per_minute = 100000000
api_burst = 100000000
api_key_rate_per_minute = 100000000
api_key_burst = 100000000
# Logs at warn: the intake logs every request at info, which would be measured too.
[telemetry]
log_format = "json"
log_filter = "warn"
CONF
if [ -n "$CP_EXTRA" ]; then
  { printf '\n# From BENCH_CP_EXTRA (%s):\n' "$CP_EXTRA"; cat "$CP_EXTRA"; } >> "$CFG"
fi
umask 022

step "migrating and registering the region, shard and id range"
"$CP" --config "$CFG" migrate >/dev/null
"$CP" --config "$CFG" regions add --name us-east-1 --api-url "http://127.0.0.1:$CP_PORT" >/dev/null
"$CP" --config "$CFG" shards add --name us-east-1-0 --region us-east-1 --dsn "$PG_BASE/$SHARD_DB" >/dev/null
"$CP" --config "$CFG" shards add-range --shard us-east-1-0 --start 1000000000 --end 2000000000 >/dev/null
"$CP" --config "$CFG" migrate >/dev/null

# How busy the machine is before anything of the benchmark runs (a 5 s sample of top).
printf 'loadavg-before\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$DIR/meta.tsv"
printf 'busy-before\t%s\n' "$(top -b -n 2 -d 5 -w 200 | awk '/^top -/{n++} n==2 && $1 ~ /^[0-9]+$/ && $9+0 >= 1 {printf "%s%s %s%%", (k++ ? ", " : ""), $12, $9}' | head -c 400)" >> "$DIR/meta.tsv"

step "starting the GitHub emulator, the control plane, the no-op server and the Probot peer"
EMULATOR_LISTEN="127.0.0.1:$GH_PORT" EMULATOR_APP_ID=1 EMULATOR_APP_SLUG=switchyard-bench \
  EMULATOR_WEBHOOK_SECRET="$WEBHOOK_SECRET" \
  "$GH" --public-key "$DIR/github-app.pub.pem" > "$DIR/logs/github-emulator.log" 2>&1 &
STARTED_PIDS+=($!)
"$CP" --config "$CFG" serve > "$DIR/logs/control-plane.log" 2>&1 &
CP_PID=$!
STARTED_PIDS+=($CP_PID)
"$LT" noop-server --listen "127.0.0.1:$NOOP_PORT" --lifetime 60m > "$DIR/logs/noop.log" 2>&1 &
NOOP_PID=$!
STARTED_PIDS+=($NOOP_PID)
# A clean environment: Probot reads its settings from it (REDIS_URL would make it cluster).
(cd "$PEER" && exec env -i PATH="$PATH" HOME="$HOME" PORT=$PROBOT_PORT APP_ID=1 \
  PRIVATE_KEY_PATH="$DIR/probot.pem" WEBHOOK_SECRET="$WEBHOOK_SECRET" LOG_LEVEL=warn \
  NODE_ENV=production node index.js) > "$DIR/logs/probot.log" 2>&1 &
PROBOT_PID=$!
STARTED_PIDS+=($PROBOT_PID)
wait_port "$GH_PORT" "the GitHub emulator"
wait_http "http://127.0.0.1:$CP_PORT/readyz" "the control plane"
wait_port "$NOOP_PORT" "the no-op server"
wait_port "$PROBOT_PORT" "the Probot peer"

NATS_PID=$(cat "$ROOT/.local/run/nats-us-east-1.pid")
PG_PID=$(head -n1 "$ROOT/.local/pg/data/postmaster.pid")
REDIS_PID=$(cat "$ROOT/.local/run/redis.pid")

# ---------------------------------------------------------------- what was measured on

meta() { printf '%s\t%s\n' "$1" "$2" >> "$DIR/meta.tsv"; }
first_line() { "$@" 2>&1 | head -n1; }
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta cpu "$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
meta cores "$(nproc)"
meta memory "$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
meta kernel "$(uname -sr)"
meta rustc "$(first_line rustc -V)"
meta nats-server "$(first_line nats-server --version)"
meta postgres "$(psql -tA "$PG_ADMIN_URL" -c 'show server_version' | head -n1)"
meta redis "$(first_line redis-server --version)"
meta node "$(first_line node --version)"
meta probot "$(node -p "require('$PEER/node_modules/probot/package.json').version")"
meta commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
meta connections "$CONNS"
meta step "$STEP"
meta cp-threads "$CP_THREADS"
[ -z "$CP_EXTRA" ] || meta cp-extra "$({ grep -v '^[[:space:]]*\(#\|$\)' "$CP_EXTRA" || true; } | paste -sd';' -)"
meta api-rate "$API_RATE"
meta runs "$RUNS"
meta examples "$EXAMPLES"
# How fast the host is today, so that runs of different days can be compared (the same commit
# measures markedly slower on a busy shared host); again after the runs.
meta calibration-before "$("$LT" calibrate | tr -d '\n')"

# Commands as written down: paths relative to the repository, process ids by name.
placeholders() {
  sed -e "s#$ROOT/##g" -e "s#=$CP_PID\b#=\$CONTROL_PLANE_PID#g" -e "s#=$NATS_PID\b#=\$NATS_PID#g" \
    -e "s#=$PG_PID\b#=\$POSTGRES_PID#g" -e "s#=$REDIS_PID\b#=\$REDIS_PID#g" \
    -e "s#=$NOOP_PID\b#=\$NOOP_PID#g" -e "s#=$PROBOT_PID\b#=\$PROBOT_PID#g"
}

# Each measurement: its name, then the loadtest command. The command is recorded as run
# (secrets travel in the environment, never on the command line).
wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
measure() { # run name args...
  local run=$1 name=$2; shift 2
  wanted "$name" || return 0
  local out="$DIR/run-$run/$name.json"
  mkdir -p "$DIR/run-$run"
  if [ "$run" = 1 ]; then
    printf '%s\t%s\n' "$name" "loadtest $*" | placeholders >> "$DIR/commands.tsv"
  fi
  step "run $run/$RUNS: $name"
  "$LT" "$@" --out "$out" > "$DIR/run-$run/$name.txt"
  sed 's/^/    /' "$DIR/run-$run/$name.txt" >&2
}

SEARCH=(--connections "$CONNS" --step "$STEP" --p99-ms 50 --start-rate 1000 --max-rate 100000
  --resolution 0.05 --max-steps 10 --warmup 2s --cooldown 1s --timeout 5s --drain 5s
  --examples "$EXAMPLES" --watch loadtest=self)
CPURL="http://127.0.0.1:$CP_PORT"
WATCH_CP=(--watch "control-plane=$CP_PID" --watch "nats-server=$NATS_PID" --watch "postgres=$PG_PID" --watch "redis=$REDIS_PID")
VERIFY=(--verify-nats "$NATS_US_URL" --nats-namespace "$NS" --server-metrics)

for run in $(seq 1 "$RUNS"); do
  measure "$run" jetstream jetstream --nats "$NATS_US_URL" --payload-bytes 12288 --in-flight 256 --duration 4s
  measure "$run" noop search --scenario webhooks --target "http://127.0.0.1:$NOOP_PORT" --no-setup \
    "${SEARCH[@]}" --watch "noop-server=$NOOP_PID"
  measure "$run" intake search --scenario webhooks --target "$CPURL" --job-share 0.1 \
    "${SEARCH[@]}" "${WATCH_CP[@]}" "${VERIFY[@]}"
  measure "$run" probot search --scenario webhooks --target "http://127.0.0.1:$PROBOT_PORT" --no-setup \
    --webhook-path /api/github/webhooks "${SEARCH[@]}" --watch "probot=$PROBOT_PID"
  measure "$run" api-reads run --scenario api-reads --target "$CPURL" --rate "$API_RATE" --duration 10s \
    --warmup 2s --connections "$CONNS" --watch loadtest=self "${WATCH_CP[@]}"
  measure "$run" onboarding run --scenario onboarding --target "$CPURL" --burst-size 20 --burst-every 2s \
    --duration 6s --connections "$CONNS" --timeout 10s --drain 10s "${WATCH_CP[@]}"
  measure "$run" mix run --scenario mix --target "$CPURL" --mix webhooks=90,api-reads=9,onboarding=1 \
    --rate 500 --duration 10s --warmup 1s --connections "$CONNS" --examples "$EXAMPLES" \
    "${WATCH_CP[@]}" "${VERIFY[@]}"
done
meta loadavg-after "$(cut -d' ' -f1-3 /proc/loadavg)"
meta calibration-after "$("$LT" calibrate | tr -d '\n')"

# ---------------------------------------------------------------- where the intake's time goes

# A profile of the control plane at a fixed rate (80 % of the first run's highest passing
# rate), with perf's software clock (no hardware counters needed).
rate=$(grep -m1 '"max_rate"' "$DIR/run-1/intake.json" 2>/dev/null | sed 's/[^0-9.]//g' || true)
rate=${rate:-500}
prof_rate=${BENCH_PROFILE_RATE:-$(awk -v r="$rate" 'BEGIN { r = int(r * 0.8); print (r < 100 ? 100 : r) }')}
if ! wanted profile; then
  :
elif command -v perf >/dev/null && perf record -e cpu-clock -o /dev/null -- true >/dev/null 2>&1; then
  step "profiling the control plane at $prof_rate webhooks/s"
  printf '%s\t%s\n' profile "loadtest run --scenario webhooks --target $CPURL --rate $prof_rate --duration 10s --connections $CONNS & sleep 2; perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -p \$CONTROL_PLANE_PID -- sleep 6" >> "$DIR/commands.tsv"
  "$LT" run --scenario webhooks --target "$CPURL" --rate "$prof_rate" --duration 10s --quiet --watch loadtest=self \
    --connections "$CONNS" --examples "$EXAMPLES" "${WATCH_CP[@]}" "${VERIFY[@]}" \
    --out "$DIR/profile-run.json" \
    > "$DIR/profile-run.txt" &
  gen=$!
  sleep 2
  perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$CP_PID" -o "$DIR/perf.data" -- sleep 6 \
    > "$DIR/logs/perf.log" 2>&1 || true
  wait "$gen" || true
  perf report -i "$DIR/perf.data" --stdio --no-children --sort dso,symbol --percent-limit 0 \
    -g none 2>/dev/null > "$DIR/profile-self.txt" || true
  perf report -i "$DIR/perf.data" --stdio --children --sort symbol --percent-limit 2 \
    -g none 2>/dev/null > "$DIR/profile-children.txt" || true
  meta profiler "perf $(perf version 2>/dev/null | sed 's/perf version //'), cpu-clock at 499 Hz, DWARF call graphs"
else
  meta profiler "none (perf unavailable)"
fi

if [ -n "$ONLY" ]; then
  step "BENCH_ONLY=$ONLY: no report written; results in $DIR"
  exit 0
fi
step "writing $OUT"
"$LT" report --dir "$DIR" --out "$OUT"
