#!/usr/bin/env bash
# Writes deploy/docker/.env with fresh secrets for the compose stack (once; it keeps an
# existing file). Needs openssl.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .env ]; then
  echo "deploy/docker/.env exists; keeping it (delete it for new secrets)"
  exit 0
fi
command -v openssl >/dev/null || { echo "openssl is needed" >&2; exit 1; }
key=$(openssl genpkey -algorithm ed25519)
# The binaries read an environment value that starts with a double quote as a quoted
# string with escapes, so the PEM travels on one line with \n; the single quotes keep
# compose from interpreting it.
pem_line=$(printf '%s\n' "$key" | awk '{printf "%s\\n", $0}')
umask 077
cat > .env <<ENV
COMPOSE_PROJECT_NAME=switchyard
OPERATOR_TOKEN=sy_operator_$(openssl rand -hex 16)
WEBHOOK_SECRET=$(openssl rand -hex 24)
JWT_SIGNING_KEY='"${pem_line}"'
ENV
echo "wrote deploy/docker/.env (operator token and webhook secret inside)"
