#!/usr/bin/env bash
# The checks of `make deploy-check` must fail on broken deployment code. Each case copies
# the deployment files into a scratch tree, breaks one thing the way a hurried edit
# would, runs the check that should catch it, and fails if that check passes.
set -euo pipefail

CHECK_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$CHECK_DIR/../.." && pwd)
# shellcheck source=tools.sh
. "$CHECK_DIR/tools.sh"
install_tools

SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
passed=0
failed=0

# A fresh copy of what the checks read: deployment code, Terraform, the binaries'
# configuration sources, the runbooks.
fresh_tree() {
  local t="$SCRATCH/tree"
  rm -rf "$t"; mkdir -p "$t/docs"
  cp -r "$ROOT/deploy" "$ROOT/terraform" "$ROOT/protocol" "$t/"
  rm -rf "$t/terraform/.terraform" "$t/terraform/modules"/*/.terraform
  for crate in control-plane worker autoscaler; do
    [ -d "$ROOT/$crate" ] || continue
    mkdir -p "$t/$crate"
    cp -r "$ROOT/$crate/src" "$t/$crate/"
    [ -d "$ROOT/$crate/config" ] && cp -r "$ROOT/$crate/config" "$t/$crate/"
  done
  cp "$ROOT"/docs/*.md "$t/docs/"
  echo "$t"
}

# expect_failure NAME FILE PYTHON-EDIT -- COMMAND...
# Applies the edit (Python: `s` is the file's text) and requires COMMAND to fail.
expect_failure() {
  local name=$1 file=$2 edit=$3; shift 4
  local t; t=$(fresh_tree)
  "$PYTHON" - "$t/$file" "$edit" <<'EOF'
import sys
path, edit = sys.argv[1], sys.argv[2]
s = open(path, encoding="utf-8").read()
before = s
env = {"s": s}
exec(edit, env)
s = env["s"]
if s == before:
    sys.exit(f"selftest: the edit changed nothing in {path}")
open(path, "w", encoding="utf-8").write(s)
EOF
  if (cd "$t" && T="$t" "$@") >"$SCRATCH/out.txt" 2>&1; then
    echo "selftest: FAIL $name: the check passed on a broken copy"
    sed 's/^/    /' "$SCRATCH/out.txt" | tail -20
    failed=$((failed + 1))
  else
    echo "selftest: ok   $name: rejected ($(grep -m1 -iE 'fail|error|invalid|not ' "$SCRATCH/out.txt" | cut -c1-150))"
    passed=$((passed + 1))
  fi
}

render() { # profile -> stdout
  "$HELM" template switchyard "$T/deploy/helm/switchyard" -f "$T/deploy/helm/switchyard/values/$1.yaml" --namespace s 2>/dev/null
}
validate_k8s() { render us-east-1 >"$SCRATCH/r.yaml" && "$KUBERNETES_VALIDATE" --strict --quiet --no-warn -k 1.33.0 "$SCRATCH/r.yaml"; }
coverage() { "$PYTHON" "$CHECK_DIR/config_coverage.py" --repo "$T" --chart "$T/deploy/helm/switchyard" --helm "$HELM" --profile "$T/deploy/helm/switchyard/values/us-east-1.yaml"; }
policies() { render us-east-1 >"$SCRATCH/r.yaml" && "$PYTHON" "$CHECK_DIR/k8s_policies.py" "$SCRATCH/r.yaml"; }
tf_refs() { "$PYTHON" "$CHECK_DIR/terraform_refs.py" "$T/terraform" "$T/terraform/modules/region" "$T/terraform/modules/topology"; }
tf_test() { cd "$T/terraform/modules/topology" && "$TERRAFORM" init -backend=false -input=false -no-color >/dev/null && "$TERRAFORM" test -no-color; }
tf_checkov() { "$CHECKOV" --framework terraform --compact --quiet --skip-download -d "$T/terraform"; }
alerts() { "$PROMTOOL" check rules "$T/deploy/observability/prometheus/alerts.yaml" && (cd "$T/deploy/observability/prometheus" && "$PROMTOOL" test rules alerts.test.yaml) && "$PYTHON" "$CHECK_DIR/observability.py" --repo "$T" --promtool "$PROMTOOL"; }
compose() { OPERATOR_TOKEN=x WEBHOOK_SECRET=x JWT_SIGNING_KEY=x "$COMPOSE" -f "$T/deploy/docker/compose.yaml" config >"$SCRATCH/c.yaml" && "$PYTHON" "$CHECK_DIR/compose_check.py" "$SCRATCH/c.yaml" "$T/deploy/docker"; }

# --- the Helm chart
expect_failure "a typo'd field in a Deployment template" deploy/helm/switchyard/templates/control-plane.yaml \
  's = s.replace("readinessProbe:", "readinesProbe:", 1)' -- validate_k8s
expect_failure "a typo'd value in a profile (values.schema.json)" deploy/helm/switchyard/values/us-east-1.yaml \
  's = s.replace("  autoscaling:\n", "  autoscalling:\n", 1)' -- render us-east-1
expect_failure "a config key the binary does not know, in a profile" deploy/helm/switchyard/values/us-east-1.yaml \
  's = s.replace("      max_connections: 20", "      max_conections: 20", 1)' -- coverage
expect_failure "a secret field no longer wired from the Secret" deploy/helm/switchyard/values.yaml \
  's = s.replace("      - redis.url\n", "", 1)' -- coverage
expect_failure "a config section the chart stops rendering" deploy/helm/switchyard/templates/_toml.tpl \
  's = s.replace("{{- if kindIs \"map\" $v -}}", "{{- if and (kindIs \"map\" $v) (ne $k \"plans\") -}}", 1)' -- coverage
expect_failure "a container allowed to escalate privileges" deploy/helm/switchyard/values.yaml \
  's = s.replace("  allowPrivilegeEscalation: false", "  allowPrivilegeEscalation: true", 1)' -- policies
expect_failure "the autoscaler's Role widened to every Deployment" deploy/helm/switchyard/templates/autoscaler.yaml \
  's = s.replace("    resources: [\"deployments/scale\"]\n    resourceNames:", "    resources: [\"deployments/scale\", \"deployments\"]\n    resourceNames:", 1)' -- policies

# --- Terraform
expect_failure "invalid HCL in the region module" terraform/modules/region/redis.tf \
  's = s.replace("resource \"random_password\" \"redis\" {", "resource \"random_password\" \"redis\" {{", 1)' -- tf_refs
expect_failure "a reference to an undeclared variable" terraform/modules/region/eks.tf \
  's = s.replace("var.eks.version", "var.eks_version", 1)' -- tf_refs
expect_failure "a module argument the module does not have" terraform/main.tf \
  's = s.replace("  app_secrets_name = var.app_secrets_name", "  app_secret_name = var.app_secrets_name", 1)' -- tf_refs
expect_failure "shard ranges that overlap (a failing terraform test)" terraform/modules/topology/main.tf \
  's = s.replace("id_end            = var.first_org_id + (r.id_block * var.max_shards_per_region + i + 1) * var.ids_per_shard", "id_end            = var.first_org_id + (r.id_block * var.max_shards_per_region + i + 2) * var.ids_per_shard", 1)' -- tf_test
expect_failure "weights no longer validated (a failing terraform test)" terraform/modules/topology/variables.tf \
  's = s.replace("r.traffic_weight]) == 100", "r.traffic_weight]) <= 100", 1)' -- tf_test
expect_failure "an unencrypted shard database (checkov)" terraform/modules/region/databases.tf \
  'import re; s = re.sub(r"storage_encrypted(\s+)= true", r"storage_encrypted\1= false", s)' -- tf_checkov

# --- alerts, dashboards, compose
expect_failure "PromQL that does not parse" deploy/observability/prometheus/alerts.yaml \
  's = s.replace("max by (region) (switchyard_autoscaler_fallback) == 1", "max by (region) (switchyard_autoscaler_fallback == 1", 1)' -- alerts
expect_failure "an alert on a misspelled metric" deploy/observability/prometheus/alerts.yaml \
  's = s.replace("min by (namespace, shard) (switchyard_shard_up)", "min by (namespace, shard) (switchyard_shards_up)", 1)' -- alerts
expect_failure "a runbook link to a missing section" deploy/observability/prometheus/alerts.yaml \
  's = s.replace("docs/runbooks.md#switchyarddeadjobs", "docs/runbooks.md#dead-jobs", 1)' -- alerts
expect_failure "a dashboard panel on a misspelled metric" deploy/observability/grafana/switchyard.json \
  's = s.replace("switchyard_worker_jobs_in_flight", "switchyard_worker_job_in_flight", 1)' -- alerts
expect_failure "a compose service depending on an unknown one" deploy/docker/compose.yaml \
  's = s.replace("      migrate-catalog:\n        condition: service_completed_successfully", "      migrate-catalogue:\n        condition: service_completed_successfully", 1)' -- compose

echo "selftest: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
