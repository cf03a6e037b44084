#!/usr/bin/env bash
# A local Confluent-compatible Schema Registry for the Avro tests and demos: crabka-schema-registry
# (Rust, Apache-2.0, from crates.io), keeping its schemas in the `_schemas` topic of the local
# broker (deploy/local/broker.sh).
#
#   deploy/local/registry.sh install   install crabka-schema-registry (pinned) if it is missing
#   deploy/local/registry.sh start     start it on 127.0.0.1:8081 and wait until it accepts writes
#   deploy/local/registry.sh stop      stop the registry this script started (by its PID)
#   deploy/local/registry.sh status    exit 0 when a registry answers on the port
#
# Why this one: the Confluent registry, Apicurio and Karapace cannot be installed from the package
# registries this project uses (no Maven, Karapace is not on PyPI). Every crabka 0.3.x release on
# crates.io is yanked (the project was renamed), so `cargo install crabka-schema-registry` refuses;
# the published crate still downloads, and it carries its own Cargo.lock, which pins its yanked
# sibling crates: `cargo install --locked --path` on the unpacked crate builds exactly that graph.
# It declares rust-version 1.96 but builds on 1.95 (hence --ignore-rust-version).
#
# Limits seen with 0.3.8 (ragstream does not use these): no `POST /compatibility/subjects/{s}/versions`
# without a version, no `/schemas/guids/{guid}`. Restarting the registry alone against a broker
# that already holds `_schemas` can reuse ids, so start a fresh broker with a fresh registry.
set -euo pipefail

REGISTRY_VERSION=0.3.8
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUN_DIR=${RAGSTREAM_RUN_DIR:-$ROOT/.run}
HOST=127.0.0.1
PORT=${RAGSTREAM_REGISTRY_PORT:-8081}
# The registry also serves an admin/profiling endpoint, on all interfaces unless told otherwise.
ADMIN_PORT=${RAGSTREAM_REGISTRY_ADMIN_PORT:-9405}
BROKER=${RAGSTREAM_BROKERS:-127.0.0.1:${RAGSTREAM_BROKER_PORT:-9092}}
PID_FILE=$RUN_DIR/registry.pid
LOG_FILE=$RUN_DIR/registry.log
BIN=crabka-schema-registry
export PATH="$HOME/.cargo/bin:$PATH"

log() { echo "registry: $*" >&2; }

answers() {
  curl -fsS --max-time 3 "http://$HOST:$PORT/subjects" >/dev/null 2>&1
}

install() {
  # The binary logs a line (and opens its admin port) before it parses `--version`.
  if command -v $BIN >/dev/null &&
    CRABKA_ADMIN_LISTEN_ADDR=127.0.0.1:0 $BIN --version 2>/dev/null | grep -qx "$BIN $REGISTRY_VERSION"; then
    return
  fi
  log "installing $BIN $REGISTRY_VERSION (about 10 minutes on 2 cores)"
  local scratch
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' RETURN
  curl -fsSL --retry 3 \
    "https://static.crates.io/crates/$BIN/$BIN-$REGISTRY_VERSION.crate" | tar -xz -C "$scratch"
  # Unoptimised, unlike the broker: a loopback test registry answers a few dozen requests per run,
  # and CI must fit its budget on a fresh machine (opt-level 1 took about 10 minutes on 2 cores).
  CARGO_PROFILE_RELEASE_OPT_LEVEL=0 \
    CARGO_PROFILE_RELEASE_LTO=false \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_INCREMENTAL=false \
    cargo install --locked --ignore-rust-version --path "$scratch/$BIN-$REGISTRY_VERSION" --bin $BIN
}

start() {
  if answers; then
    log "a registry already answers on $HOST:$PORT"
    return
  fi
  command -v $BIN >/dev/null || install
  mkdir -p "$RUN_DIR"
  log "starting $BIN on $HOST:$PORT (schemas in the broker at $BROKER)"
  CRABKA_ADMIN_LISTEN_ADDR=$HOST:$ADMIN_PORT RUST_LOG=${RUST_LOG:-warn} \
    nohup $BIN --bootstrap-servers "$BROKER" --listen-addr "$HOST:$PORT" --schemas-topic-rf 1 \
    >"$LOG_FILE" 2>&1 &
  echo $! >"$PID_FILE"
  # Reads work at once; writes answer 503 until the registry has elected itself leader, so wait
  # for a write (setting the global compatibility level the Avro README documents).
  for _ in $(seq 1 150); do
    if curl -fsS --max-time 3 -X PUT -H 'Content-Type: application/vnd.schemaregistry.v1+json' \
      --data '{"compatibility": "BACKWARD"}' "http://$HOST:$PORT/config" >/dev/null 2>&1; then
      log "ready"
      return
    fi
    if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
      cat "$LOG_FILE" >&2
      log "$BIN exited"
      exit 1
    fi
    sleep 0.2
  done
  tail -20 "$LOG_FILE" >&2
  log "$BIN did not accept writes within 30 s"
  exit 1
}

stop() {
  [[ -f $PID_FILE ]] || return 0
  local pid
  pid=$(cat "$PID_FILE")
  # SIGINT: the registry's clean shutdown (it leaves its consumer group).
  kill -INT "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) answers ;;
  *)
    echo "usage: $0 install|start|stop|status" >&2
    exit 2
    ;;
esac
