#!/usr/bin/env bash
# `make deploy-check`: every offline check of the deployment code. Installs its pinned
# tools on first use (deploy/check/tools.sh), then:
#   helm      lint and render every values profile; Kubernetes schemas (strict, 1.30 and
#             1.33); checkov; Switchyard's own policies; every config field reachable
#   docker    hadolint and checkov on the Dockerfiles; compose.yaml resolved by Compose
#   alerts    promtool check + unit tests of the alert rules; dashboard and runbook links
#   terraform fmt; validate + test of the provider-free topology module; HCL parsing and
#             references of the AWS modules; checkov
#   selftest  broken copies of the chart, the Terraform and the alerts must be rejected
# Usage: deploy-check.sh [--no-selftest]
set -euo pipefail

CHECK_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$CHECK_DIR/../.." && pwd)
CHART="$ROOT/deploy/helm/switchyard"
K8S_VERSIONS=(1.30.0 1.33.0)
SELFTEST=1
[ "${1:-}" = "--no-selftest" ] && SELFTEST=0

# shellcheck source=tools.sh
. "$CHECK_DIR/tools.sh"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
START=$(date +%s)
step() { printf '==> %s (%ss)\n' "$*" "$(( $(date +%s) - START ))"; }
quiet_helm() { "$HELM" "$@" 2> >(grep -v 'symbolic link' >&2); }

step "tools"
install_tools

# ---------------------------------------------------------------------------- helm ---
step "helm: lint and render every profile"
PROFILES=("$CHART"/values/*.yaml)
for profile in "${PROFILES[@]}"; do
  name=$(basename "$profile" .yaml)
  quiet_helm lint --strict "$CHART" -f "$profile" --namespace "switchyard-$name" >"$WORK/lint-$name.txt" \
    || { cat "$WORK/lint-$name.txt"; echo "helm lint failed for $name" >&2; exit 1; }
  quiet_helm template switchyard "$CHART" -f "$profile" --namespace "switchyard-$name" >"$WORK/rendered-$name.yaml"
done

step "helm: Kubernetes schemas (kubernetes-validate --strict)"
for v in "${K8S_VERSIONS[@]}"; do
  "$KUBERNETES_VALIDATE" --strict --quiet --no-warn -k "$v" "$WORK"/rendered-*.yaml
done
"$PYTHON" "$CHECK_DIR/crd_schemas.py" "$WORK"/rendered-*.yaml

step "helm: Switchyard's policies"
"$PYTHON" "$CHECK_DIR/k8s_policies.py" "$WORK"/rendered-*.yaml

step "helm: every config field of every binary is reachable from the values"
profile_args=()
for profile in "${PROFILES[@]}"; do profile_args+=(--profile "$profile"); done
"$PYTHON" "$CHECK_DIR/config_coverage.py" --repo "$ROOT" --chart "$CHART" --helm "$HELM" "${profile_args[@]}" \
  2> >(grep -v 'symbolic link' >&2)

step "helm: checkov (Kubernetes)"
mkdir -p "$WORK/k8s"
cp "$WORK"/rendered-*.yaml "$WORK/k8s/"
"$CHECKOV" --config-file "$CHECK_DIR/checkov-kubernetes.yaml" -d "$WORK/k8s"

# -------------------------------------------------------------------------- docker ---
step "docker: hadolint and checkov (Dockerfile)"
"$HADOLINT" --failure-threshold warning "$ROOT"/deploy/docker/*.Dockerfile
"$CHECKOV" --framework dockerfile --compact --quiet --skip-download -d "$ROOT/deploy/docker"

step "docker: compose.yaml"
# Compose resolves the file offline; the secrets are placeholders for this check only.
OPERATOR_TOKEN=check WEBHOOK_SECRET=check JWT_SIGNING_KEY=check \
  "$COMPOSE" -f "$ROOT/deploy/docker/compose.yaml" --project-directory "$ROOT/deploy/docker" config >"$WORK/compose.yaml"
"$PYTHON" "$CHECK_DIR/compose_check.py" "$WORK/compose.yaml" "$ROOT/deploy/docker"

# -------------------------------------------------------------------------- alerts ---
step "observability: promtool and dashboards"
"$PROMTOOL" check rules "$ROOT/deploy/observability/prometheus/alerts.yaml"
(cd "$ROOT/deploy/observability/prometheus" && "$PROMTOOL" test rules alerts.test.yaml)
"$PYTHON" "$CHECK_DIR/observability.py" --repo "$ROOT" --promtool "$PROMTOOL"

# ----------------------------------------------------------------------- terraform ---
step "terraform: fmt"
(cd "$ROOT/terraform" && "$TERRAFORM" fmt -check -recursive -diff -no-color)

step "terraform: validate and test the topology module (no provider)"
cp -r "$ROOT/terraform/modules/topology" "$WORK/topology"
(cd "$WORK/topology" && "$TERRAFORM" init -backend=false -input=false -no-color >/dev/null \
  && "$TERRAFORM" validate -no-color && "$TERRAFORM" test -no-color)

step "terraform: HCL and references of the AWS modules"
"$PYTHON" "$CHECK_DIR/terraform_refs.py" "$ROOT/terraform" "$ROOT/terraform/modules/region" "$ROOT/terraform/modules/topology"

step "terraform: checkov"
"$CHECKOV" --framework terraform --compact --quiet --skip-download -d "$ROOT/terraform"

# ------------------------------------------------------------------------ selftest ---
if [ "$SELFTEST" = 1 ]; then
  step "selftest: broken copies must be rejected"
  bash "$CHECK_DIR/selftest.sh"
fi

step "deploy-check passed"
