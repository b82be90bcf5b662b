#!/usr/bin/env bash
# The Switchyard local stack: everything on one machine, no containers, under .local/.
#
#   stack.sh up            install what is missing, build, start everything, print how to use it
#   stack.sh down          stop exactly what `up` started (pid files)
#   stack.sh status        what is running
#   stack.sh clean         down, then remove .local/
#   stack.sh infra         start only PostgreSQL, NATS and Redis (what the tests need)
#   stack.sh with-infra -- CMD...
#                          run CMD with the infrastructure up; stop afterwards what this started
#
# Ports start at SWITCHYARD_PORT_BASE (default 18400), so the stack never collides with servers
# already on the machine. PostgreSQL runs as an unprivileged user (it refuses root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOCAL="$ROOT/.local"
BASE="${SWITCHYARD_PORT_BASE:-18400}"
PG_PORT=$((BASE + 32))
REDIS_PORT=$((BASE + 79))
NATS_US_PORT=$((BASE + 22))
NATS_EU_PORT=$((BASE + 23))
LEAF_PORT=$((BASE + 24))
NATS_US_MON=$((BASE + 122))
NATS_EU_MON=$((BASE + 123))
CP_US_PORT=$((BASE + 80))
CP_EU_PORT=$((BASE + 81))
WK_US_PORT=$((BASE + 90))
WK_EU_PORT=$((BASE + 91))
# The autoscaler of each region starts its workers: worker n listens on WK_<R>_PORT + 2(n-1).
AS_US_PORT=$((BASE + 85))
AS_EU_PORT=$((BASE + 86))
AS_MAX_WORKERS=8
GH_PORT=$((BASE + 70))
PG_USER_OS="${SWITCHYARD_PG_OS_USER:-switchyard}"
REGIONS=(us-east-1 eu-west-1)

say() { printf '%s\n' "$*"; }
step() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- installation

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1; fi
}

pg_bindir() {
  if command -v pg_ctl >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v pg_ctl)")"; return; fi
  local d; d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
  [ -n "$d" ] && [ -x "$d/pg_ctl" ] && echo "$d"
}

install_missing() {
  local pkgs=()
  [ -n "$(pg_bindir)" ] || pkgs+=(postgresql)
  command -v psql >/dev/null 2>&1 || pkgs+=(postgresql-client)
  command -v nats-server >/dev/null 2>&1 || pkgs+=(nats-server)
  command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
  [ ${#pkgs[@]} -eq 0 ] && return 0
  step "installing ${pkgs[*]} from the system packages"
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${pkgs[*]} yourself, then run make up again"
  if ! as_root true; then
    die "installing ${pkgs[*]} needs root: run 'sudo apt-get install -y ${pkgs[*]}' (or make up as root), then make up again"
  fi
  # Do not let the Debian package create and start its own cluster: the stack runs its own.
  as_root mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.d/switchyard.conf >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
}

# ---------------------------------------------------------------- secrets and env

secret() { head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c "$1"; }

ensure_secrets() {
  mkdir -p "$LOCAL"
  chmod 755 "$LOCAL"
  if [ ! -f "$LOCAL/secrets.env" ]; then
    umask 077
    {
      echo "PG_PASSWORD=$(secret 24)"
      echo "OPERATOR_TOKEN=sy_operator_$(secret 32)"
      echo "WEBHOOK_SECRET=$(secret 32)"
    } > "$LOCAL/secrets.env"
    umask 022
  fi
  # shellcheck disable=SC1091
  . "$LOCAL/secrets.env"
}

pg_url() { echo "postgres://switchyard:${PG_PASSWORD}@127.0.0.1:${PG_PORT}/$1"; }
shard_db() { echo "switchyard_shard_${1//-/_}_0"; }

write_env() {
  umask 077
  cat > "$LOCAL/stack.env" <<ENV
# Written by make up. Source it: set -a; . .local/stack.env; set +a
US_URL=http://127.0.0.1:${CP_US_PORT}
EU_URL=http://127.0.0.1:${CP_EU_PORT}
OPERATOR_TOKEN=${OPERATOR_TOKEN}
WEBHOOK_SECRET=${WEBHOOK_SECRET}
DATABASE_URL=$(pg_url switchyard_catalog)
PG_ADMIN_URL=$(pg_url postgres)
NATS_US_URL=nats://127.0.0.1:${NATS_US_PORT}
NATS_EU_URL=nats://127.0.0.1:${NATS_EU_PORT}
REDIS_URL=redis://127.0.0.1:${REDIS_PORT}
GITHUB_API_URL=http://127.0.0.1:${GH_PORT}
US_WORKER_OPS=http://127.0.0.1:${WK_US_PORT}
EU_WORKER_OPS=http://127.0.0.1:${WK_EU_PORT}
US_AUTOSCALER_OPS=http://127.0.0.1:${AS_US_PORT}
EU_AUTOSCALER_OPS=http://127.0.0.1:${AS_EU_PORT}
ENV
  umask 022
}

# ---------------------------------------------------------------- processes

pidfile() { echo "$LOCAL/run/$1.pid"; }

alive() {
  local f; f=$(pidfile "$1")
  [ -f "$f" ] || return 1
  local pid; pid=$(cat "$f" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # The pid must still be ours (pids get reused): its command line names .local/, or, for
  # Redis, which rewrites its title, its port.
  local cmdline; cmdline=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || return 1
  case "$cmdline" in
    *"$LOCAL"*) return 0 ;;
    *redis-server*":${REDIS_PORT}"*) [ "$1" = redis ] ;;
    *) return 1 ;;
  esac
}

wait_port() {
  local port=$1 what=$2 i
  for i in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { exec 3>&- 3<&- || true; return 0; }
    sleep 0.1
  done
  die "$what did not start listening on port $port (see $LOCAL/log/)"
}

spawn() { # name, command... (runs detached; pid file; log)
  local name=$1; shift
  mkdir -p "$LOCAL/run" "$LOCAL/log"
  setsid nohup "$@" >> "$LOCAL/log/$name.log" 2>&1 < /dev/null &
  echo $! > "$(pidfile "$name")"
}

worker_names() { # the workers with a pid file (started by the autoscalers), in order
  local f
  for f in "$LOCAL"/run/worker-*.pid; do
    if [ -e "$f" ]; then basename "$f" .pid; fi
  done | sort -V
}

stop_workers() { # SIGTERM to every worker at once (they drain in parallel), then as stop_pid
  local name names=()
  for name in $(worker_names); do
    if alive "$name"; then
      kill -TERM "$(cat "$(pidfile "$name")")" 2>/dev/null || true
      names+=("$name")
    fi
  done
  for name in $(worker_names); do stop_pid "$name" >/dev/null; done
  for name in "${names[@]}"; do say "stopped $name"; done
}

stop_pid() { # name
  local name=$1 f pid i
  f=$(pidfile "$name")
  alive "$name" || { rm -f "$f"; return 0; }
  pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  rm -f "$f"
  say "stopped $name"
}

# ---------------------------------------------------------------- PostgreSQL

pg_run() { # run a PostgreSQL program as the cluster's owner
  local bin; bin="$(pg_bindir)/$1"; shift
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$PG_USER_OS" -- "$bin" "$@"; else "$bin" "$@"; fi
}

pg_alive() { [ -f "$LOCAL/pg/data/postmaster.pid" ] && pg_run pg_ctl -D "$LOCAL/pg/data" status >/dev/null 2>&1; }

start_pg() {
  if pg_alive; then return 0; fi
  if [ "$(id -u)" -eq 0 ] && ! id "$PG_USER_OS" >/dev/null 2>&1; then
    step "creating the unprivileged user $PG_USER_OS to run PostgreSQL (it refuses to run as root)"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER_OS"
  fi
  mkdir -p "$LOCAL/pg"
  if [ ! -f "$LOCAL/pg/data/PG_VERSION" ]; then
    step "initializing the PostgreSQL cluster in .local/pg"
    local pw; pw=$(mktemp); echo "$PG_PASSWORD" > "$pw"
    [ "$(id -u)" -eq 0 ] && chown -R "$PG_USER_OS" "$LOCAL/pg" "$pw"
    pg_run initdb -D "$LOCAL/pg/data" -U switchyard --pwfile="$pw" --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null \
      || { rm -f "$pw"; die "initdb failed"; }
    rm -f "$pw"
    cat >> "$LOCAL/pg/data/postgresql.conf" <<CONF
# Switchyard local stack
listen_addresses = '127.0.0.1'
port = ${PG_PORT}
unix_socket_directories = '${LOCAL}/pg'
max_connections = 400
shared_buffers = 256MB
CONF
  fi
  [ "$(id -u)" -eq 0 ] && chown -R "$PG_USER_OS" "$LOCAL/pg"
  step "starting PostgreSQL on 127.0.0.1:${PG_PORT}"
  pg_run pg_ctl -D "$LOCAL/pg/data" -l "$LOCAL/pg/postgres.log" -w -t 60 start >/dev/null || die "PostgreSQL did not start (see .local/pg/postgres.log)"
}

stop_pg() {
  pg_alive || return 0
  pg_run pg_ctl -D "$LOCAL/pg/data" -m fast -w stop >/dev/null && say "stopped postgresql"
}

psql_admin() { PGPASSWORD="$PG_PASSWORD" psql -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U switchyard "$@"; }

ensure_db() {
  local exists
  exists=$(psql_admin -d postgres -tAc "select 1 from pg_database where datname = '$1'")
  [ "$exists" = 1 ] || psql_admin -d postgres -c "create database $1" >/dev/null
}

# ---------------------------------------------------------------- NATS and Redis

start_nats() {
  # One Go scheduler thread each (GOMAXPROCS=1): the servers share the machine's cores with
  # everything else the stack runs, and a second idle-spinning thread cost a quarter of NATS's
  # CPU per webhook (docs/operations.md, "Runtime threads").
  mkdir -p "$LOCAL/nats"
  cat > "$LOCAL/nats/us-east-1.conf" <<CONF
server_name: switchyard-us-east-1
listen: 127.0.0.1:${NATS_US_PORT}
http: 127.0.0.1:${NATS_US_MON}
max_payload: 8MB
jetstream { store_dir: "${LOCAL}/nats/us-east-1", domain: us-east-1 }
leafnodes { listen: 127.0.0.1:${LEAF_PORT} }
CONF
  cat > "$LOCAL/nats/eu-west-1.conf" <<CONF
server_name: switchyard-eu-west-1
listen: 127.0.0.1:${NATS_EU_PORT}
http: 127.0.0.1:${NATS_EU_MON}
max_payload: 8MB
jetstream { store_dir: "${LOCAL}/nats/eu-west-1", domain: eu-west-1 }
leafnodes { remotes: [ { url: "nats-leaf://127.0.0.1:${LEAF_PORT}" } ] }
CONF
  if ! alive nats-us-east-1; then
    step "starting NATS (us-east-1 domain) on 127.0.0.1:${NATS_US_PORT}"
    spawn nats-us-east-1 env GOMAXPROCS=1 nats-server -c "$LOCAL/nats/us-east-1.conf"
    wait_port "$NATS_US_PORT" "NATS us-east-1"
  fi
  if ! alive nats-eu-west-1; then
    step "starting NATS (eu-west-1 domain, leafnode to us-east-1) on 127.0.0.1:${NATS_EU_PORT}"
    spawn nats-eu-west-1 env GOMAXPROCS=1 nats-server -c "$LOCAL/nats/eu-west-1.conf"
    wait_port "$NATS_EU_PORT" "NATS eu-west-1"
  fi
}

start_redis() {
  alive redis && return 0
  mkdir -p "$LOCAL/redis"
  step "starting Redis on 127.0.0.1:${REDIS_PORT}"
  spawn redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$LOCAL/redis" \
    --save "" --appendonly no --daemonize no
  wait_port "$REDIS_PORT" "Redis"
}

# ---------------------------------------------------------------- Switchyard

ensure_github_app_key() {
  [ -f "$LOCAL/github-app.pem" ] && return 0
  umask 077
  openssl genrsa -traditional -out "$LOCAL/github-app.pem" 2048 2>/dev/null
  openssl rsa -in "$LOCAL/github-app.pem" -pubout -out "$LOCAL/github-app.pub.pem" 2>/dev/null
  umask 022
}

ensure_jwt_key() {
  [ -f "$LOCAL/jwt-signing.pem" ] && return 0
  umask 077
  "$CP" keys generate | awk '/BEGIN PRIVATE KEY/,/END PRIVATE KEY/' > "$LOCAL/jwt-signing.pem"
  umask 022
}

cp_config() { # region port
  local region=$1 port=$2 nats
  [ "$region" = us-east-1 ] && nats=$NATS_US_PORT || nats=$NATS_EU_PORT
  mkdir -p "$LOCAL/config"
  umask 077
  cat > "$LOCAL/config/control-plane-$region.toml" <<CONF
[region]
name = "$region"
[server]
listen = "127.0.0.1:$port"
public_url = "http://127.0.0.1:$port"
# The stack's processes share this machine's cores: one runtime thread per control plane
# wakes fewer threads per request (docs/operations.md, "Runtime threads").
worker_threads = 1
[database]
catalog_url = "$(pg_url switchyard_catalog)"
[nats]
url = "nats://127.0.0.1:$nats"
[redis]
url = "redis://127.0.0.1:${REDIS_PORT}"
[auth]
operator_tokens = ["${OPERATOR_TOKEN}"]
[auth.jwt]
signing_kid = "local-1"
signing_key = """
$(cat "$LOCAL/jwt-signing.pem")
"""
[github]
webhook_secrets = ["${WEBHOOK_SECRET}"]
[github.app]
app_id = 1
private_key_file = "$LOCAL/github-app.pem"
api_url = "http://127.0.0.1:${GH_PORT}"
[github.install]
app_slug = "switchyard-local"
web_url = "http://127.0.0.1:${GH_PORT}"
[telemetry]
log_format = "json"
log_filter = "info"
CONF
  umask 022
}

worker_config() { # region ops-port
  local region=$1 port=$2 nats
  [ "$region" = us-east-1 ] && nats=$NATS_US_PORT || nats=$NATS_EU_PORT
  mkdir -p "$LOCAL/config" "$LOCAL/workspaces"
  umask 077
  cat > "$LOCAL/config/worker-$region.toml" <<CONF
[worker]
region = "$region"
id = "local-$region-1"
ops_listen = "127.0.0.1:$port"
workspace_root = "$LOCAL/workspaces"
[database]
catalog_url = "$(pg_url switchyard_catalog)"
[nats]
url = "nats://127.0.0.1:$nats"
[redis]
url = "redis://127.0.0.1:${REDIS_PORT}"
# The local GitHub emulator: job tokens, clones of its repositories and the job comments.
[github]
web_url = "http://127.0.0.1:${GH_PORT}"
# The emulator serves git's "dumb" HTTP protocol, which cannot make shallow clones.
clone_depth = 0
[github.app]
app_id = 1
private_key_file = "$LOCAL/github-app.pem"
api_url = "http://127.0.0.1:${GH_PORT}"
CONF
  umask 022
}

autoscaler_config() { # region ops-port first-worker-ops-port
  local region=$1 port=$2 worker_port=$3 nats
  [ "$region" = us-east-1 ] && nats=$NATS_US_PORT || nats=$NATS_EU_PORT
  mkdir -p "$LOCAL/config"
  cat > "$LOCAL/config/autoscaler-$region.toml" <<CONF
[region]
name = "$region"
[ops]
listen = "127.0.0.1:$port"
[nats]
url = "nats://127.0.0.1:$nats"
[sampler]
every = "2s"
# At least one worker, so a job runs at once; scale-downs after a minute without a forecast
# (a fresh stack has no history: the reactive rule decides until it has six hours of it).
[policy]
min_workers = 1
max_workers = ${AS_MAX_WORKERS}
lead_time = "10s"
decide_every = "5s"
fallback_scale_down_window = "1m"
[actuator]
kind = "local"
[actuator.local]
worker_binary = "$WK"
worker_config = "$LOCAL/config/worker-$region.toml"
run_dir = "$LOCAL/run"
log_dir = "$LOCAL/log"
id_prefix = "local"
ops_port_first = $worker_port
ops_port_step = 2
[telemetry]
log_format = "json"
log_filter = "info"
CONF
}

build() {
  step "building (cargo build --workspace --bins)"
  (cd "$ROOT" && SQLX_OFFLINE=true cargo build --quiet --workspace --bins) || die "the build failed"
}

CP="$ROOT/target/debug/control-plane"
WK="$ROOT/target/debug/worker"
AS="$ROOT/target/debug/autoscaler"
GH="$ROOT/target/debug/github-emulator"

start_github() {
  alive github-emulator && return 0
  step "starting the GitHub emulator on 127.0.0.1:${GH_PORT} (no network needed)"
  EMULATOR_LISTEN="127.0.0.1:${GH_PORT}" EMULATOR_APP_ID=1 EMULATOR_APP_SLUG=switchyard-local \
    EMULATOR_WEBHOOK_URL="http://127.0.0.1:${CP_US_PORT}/webhooks/github" \
    EMULATOR_SETUP_URL="http://127.0.0.1:${CP_US_PORT}/github/setup" \
    EMULATOR_WEBHOOK_SECRET="${WEBHOOK_SECRET}" \
    spawn github-emulator "$GH" --public-key "$LOCAL/github-app.pub.pem"
  wait_port "$GH_PORT" "the GitHub emulator"
}

bootstrap() {
  ensure_db switchyard_catalog
  for r in "${REGIONS[@]}"; do ensure_db "$(shard_db "$r")"; done
  ensure_jwt_key
  ensure_github_app_key
  cp_config us-east-1 "$CP_US_PORT"
  cp_config eu-west-1 "$CP_EU_PORT"
  local cfg="$LOCAL/config/control-plane-us-east-1.toml"
  step "migrating and registering regions, shards and id ranges"
  "$CP" --config "$cfg" migrate >/dev/null
  "$CP" --config "$cfg" regions add --name us-east-1 --api-url "http://127.0.0.1:${CP_US_PORT}" >/dev/null
  "$CP" --config "$cfg" regions add --name eu-west-1 --api-url "http://127.0.0.1:${CP_EU_PORT}" >/dev/null
  "$CP" --config "$cfg" shards add --name us-east-1-0 --region us-east-1 --dsn "$(pg_url "$(shard_db us-east-1)")" >/dev/null
  "$CP" --config "$cfg" shards add --name eu-west-1-0 --region eu-west-1 --dsn "$(pg_url "$(shard_db eu-west-1)")" >/dev/null
  "$CP" --config "$cfg" shards add-range --shard us-east-1-0 --start 1000000000 --end 2000000000 >/dev/null
  "$CP" --config "$cfg" shards add-range --shard eu-west-1-0 --start 2000000000 --end 3000000000 >/dev/null
  "$CP" --config "$cfg" migrate >/dev/null
}

start_services() {
  local r port
  start_github
  for r in "${REGIONS[@]}"; do
    [ "$r" = us-east-1 ] && port=$CP_US_PORT || port=$CP_EU_PORT
    if ! alive "control-plane-$r"; then
      step "starting the control plane of $r on 127.0.0.1:$port"
      spawn "control-plane-$r" "$CP" --config "$LOCAL/config/control-plane-$r.toml" serve
    fi
  done
  # The workers are the autoscalers' to start and stop (local-process actuator).
  local wport
  for r in "${REGIONS[@]}"; do
    if [ "$r" = us-east-1 ]; then port=$AS_US_PORT wport=$WK_US_PORT; else port=$AS_EU_PORT wport=$WK_EU_PORT; fi
    worker_config "$r" "$wport"
    autoscaler_config "$r" "$port" "$wport"
    if ! alive "autoscaler-$r"; then
      step "starting the autoscaler of $r (it starts the workers, at least one)"
      spawn "autoscaler-$r" "$AS" --config "$LOCAL/config/autoscaler-$r.toml" run
    fi
  done
  wait_port "$CP_US_PORT" "the us-east-1 control plane"
  wait_port "$CP_EU_PORT" "the eu-west-1 control plane"
  wait_port "$AS_US_PORT" "the us-east-1 autoscaler"
  wait_port "$AS_EU_PORT" "the eu-west-1 autoscaler"
  wait_port "$WK_US_PORT" "the first us-east-1 worker"
  wait_port "$WK_EU_PORT" "the first eu-west-1 worker"
}

all_alive() {
  pg_alive && alive nats-us-east-1 && alive nats-eu-west-1 && alive redis && alive github-emulator \
    && alive control-plane-us-east-1 && alive control-plane-eu-west-1 && alive autoscaler-us-east-1 && alive autoscaler-eu-west-1
}

infra_alive() { pg_alive && alive nats-us-east-1 && alive nats-eu-west-1 && alive redis; }

walkthrough() {
  cat <<TXT

Switchyard is up.

  us-east-1 API   http://127.0.0.1:${CP_US_PORT}   (worker ops http://127.0.0.1:${WK_US_PORT}/metrics)
  eu-west-1 API   http://127.0.0.1:${CP_EU_PORT}   (worker ops http://127.0.0.1:${WK_EU_PORT}/metrics)
  autoscalers     http://127.0.0.1:${AS_US_PORT}/metrics  http://127.0.0.1:${AS_EU_PORT}/metrics
                  (they start 1 to ${AS_MAX_WORKERS} workers per region: make status lists them)
  GitHub          http://127.0.0.1:${GH_PORT}   (an emulator: any installation id exists)
  operator token  ${OPERATOR_TOKEN}
  webhook secret  ${WEBHOOK_SECRET}
  catalog         $(pg_url switchyard_catalog)
  logs            .local/log/

The same values are in .local/stack.env. Try it (README.md has the full walkthrough):

  set -a; . .local/stack.env; set +a
  curl -s -X POST \$US_URL/v1/orgs -H "Authorization: Bearer \$OPERATOR_TOKEN" \\
       -H 'Content-Type: application/json' \\
       -d '{"slug":"acme","name":"Acme","region":"us-east-1","plan":"team","owner_email":"owner@acme.example"}'

Stop it with: make down   (data stays in .local/; make clean removes it)
TXT
}

cmd_infra() {
  install_missing
  ensure_secrets
  start_pg
  start_nats
  start_redis
  write_env
}

cmd_up() {
  if [ -f "$LOCAL/secrets.env" ]; then ensure_secrets; fi
  if [ -f "$LOCAL/secrets.env" ] && all_alive; then
    say "Switchyard is already up (make down stops it)."
    walkthrough
    return 0
  fi
  cmd_infra
  build
  bootstrap
  start_services
  write_env
  walkthrough
}

cmd_down() {
  local name
  # The autoscalers first, so that they start no more workers; then every worker they started.
  for name in autoscaler-us-east-1 autoscaler-eu-west-1; do stop_pid "$name"; done
  stop_workers
  for name in control-plane-us-east-1 control-plane-eu-west-1 github-emulator redis nats-eu-west-1 nats-us-east-1; do
    stop_pid "$name"
  done
  [ -f "$LOCAL/secrets.env" ] && . "$LOCAL/secrets.env"
  [ -d "$LOCAL/pg/data" ] && stop_pg
  return 0
}

cmd_status() {
  local name
  pg_alive && say "postgresql: up (127.0.0.1:${PG_PORT})" || say "postgresql: down"
  for name in nats-us-east-1 nats-eu-west-1 redis github-emulator control-plane-us-east-1 control-plane-eu-west-1 autoscaler-us-east-1 autoscaler-eu-west-1; do
    alive "$name" && say "$name: up (pid $(cat "$(pidfile "$name")"))" || say "$name: down"
  done
  for name in $(worker_names); do
    if alive "$name"; then say "$name: up (pid $(cat "$(pidfile "$name")"))"; fi
  done
}

cmd_with_infra() {
  local started=0
  [ "${1:-}" = "--" ] && shift
  if ! { [ -f "$LOCAL/secrets.env" ] && ensure_secrets && infra_alive; }; then
    cmd_infra
    started=1
  fi
  write_env
  local rc=0
  "$@" || rc=$?
  if [ "$started" = 1 ]; then
    for name in redis nats-eu-west-1 nats-us-east-1; do stop_pid "$name" >/dev/null; done
    stop_pg >/dev/null || true
  fi
  return $rc
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  clean) cmd_down; rm -rf "$LOCAL"; say "removed .local/" ;;
  infra) cmd_infra ;;
  with-infra) shift; cmd_with_infra "$@" ;;
  *) die "usage: $0 up|down|status|clean|infra|with-infra -- CMD" ;;
esac
