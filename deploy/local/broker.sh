#!/usr/bin/env bash
# The local Kafka-compatible broker (tansu) used by the demo and the integration tests.
#
#   deploy/local/broker.sh install              install tansu (pinned) if it is missing
#   deploy/local/broker.sh start                start it on 127.0.0.1:9092 and wait until it answers
#   deploy/local/broker.sh stop                 stop the broker this script started (by its PID)
#   deploy/local/broker.sh status               exit 0 when a broker answers on the port
#   deploy/local/broker.sh topics TOPOLOGY      create the topology's topics (idempotent)
#
# Storage: RAGSTREAM_BROKER_STORAGE=memory (default; gone when the broker stops) or postgres
# (kept in the PostgreSQL database RAGSTREAM_BROKER_PG_DB on 127.0.0.1:5432, so a restart keeps
# the data; needs RAGSTREAM_TANSU_PG_SCHEMA the first time, see storage_url). With PostgreSQL 15,
# consumers must set isolation.level=read_uncommitted: tansu's read-committed "latest offset"
# query needs PostgreSQL 16. Every command is safe to run twice.
set -euo pipefail

TANSU_VERSION=0.6.0
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUN_DIR=${RAGSTREAM_RUN_DIR:-$ROOT/.run}
HOST=127.0.0.1
PORT=${RAGSTREAM_BROKER_PORT:-9092}
STORAGE=${RAGSTREAM_BROKER_STORAGE:-memory}
PG_DB=${RAGSTREAM_BROKER_PG_DB:-tansu}
PID_FILE=$RUN_DIR/tansu.pid
LOG_FILE=$RUN_DIR/tansu.log
export PATH="$HOME/.cargo/bin:$PATH"

log() { echo "broker: $*" >&2; }

answers() {
  # A metadata request, not just an open port: the broker must actually speak Kafka.
  command -v tansu >/dev/null && timeout 5 tansu topic list --broker "tcp://$HOST:$PORT" >/dev/null 2>&1
}

install() {
  if command -v tansu >/dev/null && [[ $(tansu --version 2>/dev/null) == "tansu $TANSU_VERSION" ]]; then
    return
  fi
  log "installing tansu $TANSU_VERSION (about 15 minutes on 2 cores)"
  # tansu's release profile (full optimisation, one codegen unit) took 31 minutes on 2 cores; a
  # loopback test broker does not need it, and CI must fit its budget on a fresh machine. At
  # opt-level 1 it took 26.5 minutes beside the project's build; the crates below are not on the
  # produce/fetch path (scripting, the proxy, perf and data generators, OpenTelemetry export,
  # DNS, TLS and SASL, schema validation of topics that have schemas), so they are not optimised.
  local unoptimised=(rhai rhai_codegen rama rama-core rama-http rama-http-types rama-http-headers rama-net
    rama-tcp rama-dns rama-ua rama-utils hickory-proto hickory-resolver opentelemetry opentelemetry_sdk
    opentelemetry-otlp opentelemetry-proto opentelemetry-http opentelemetry-stdout tracing-opentelemetry
    tonic tonic-prost prost protobuf protobuf-parse protobuf-json-mapping fake jsonschema apache-avro
    tansu-perf tansu-proxy tansu-generator tansu-cat tansu-otel tansu-schema rsasl x509-cert
    bigdecimal num-bigint governor cached indicatif clap_builder quick-xml)
  local settings=()
  for crate in "${unoptimised[@]}"; do
    settings+=(--config "profile.release.package.$crate.opt-level=0")
  done
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
    CARGO_PROFILE_RELEASE_LTO=false \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_INCREMENTAL=false \
    cargo "${settings[@]}" install --locked tansu --version "$TANSU_VERSION" \
    --no-default-features --features dynostore,postgres
}

storage_url() {
  case "$STORAGE" in
    memory) echo "memory://tansu/" ;;
    postgres)
      if ! psql -h "$HOST" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" | grep -q 1; then
        psql -h "$HOST" -U postgres -qc "CREATE DATABASE \"$PG_DB\"" >/dev/null
      fi
      # tansu 0.6.0 does not create its tables, and its PostgreSQL DDL ships only in the tansu
      # source repository (etc/initdb.d/010-schema.sql at tag v0.6.0), not in the crate. Point
      # RAGSTREAM_TANSU_PG_SCHEMA at that file once; an initialised database is reused as is.
      if ! psql -h "$HOST" -U postgres -d "$PG_DB" -tAc "SELECT to_regclass('public.cluster') IS NOT NULL" | grep -q t; then
        local schema=${RAGSTREAM_TANSU_PG_SCHEMA:-}
        if [[ -z $schema || ! -f $schema ]]; then
          log "database $PG_DB has no tansu schema; set RAGSTREAM_TANSU_PG_SCHEMA to tansu v0.6.0's etc/initdb.d/010-schema.sql"
          exit 2
        fi
        psql -h "$HOST" -U postgres -d "$PG_DB" -v ON_ERROR_STOP=1 -qf "$schema" >/dev/null
        log "applied the tansu schema from $schema to database $PG_DB"
      fi
      # The local server offers TLS with a certificate for "localhost" only; loopback needs none.
      echo "postgres://postgres@$HOST:5432/$PG_DB?sslmode=disable"
      ;;
    *) log "RAGSTREAM_BROKER_STORAGE must be memory or postgres, got '$STORAGE'"; exit 2 ;;
  esac
}

running_pid() {
  [[ -f $PID_FILE ]] || return 1
  local pid
  pid=$(cat "$PID_FILE")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start() {
  if pid=$(running_pid); then
    log "already running (pid $pid) on $HOST:$PORT"
    return
  fi
  if answers; then
    log "a broker not started by this script already answers on $HOST:$PORT; using it"
    return
  fi
  install
  mkdir -p "$RUN_DIR"
  local url
  url=$(storage_url)
  log "starting tansu on $HOST:$PORT with $STORAGE storage"
  nohup tansu broker \
    --listener-url "tcp://$HOST:$PORT" \
    --advertised-listener-url "tcp://$HOST:$PORT" \
    --storage-engine "$url" \
    >"$LOG_FILE" 2>&1 &
  echo $! >"$PID_FILE"
  for _ in $(seq 1 100); do
    if answers; then
      log "ready (pid $(cat "$PID_FILE"), log $LOG_FILE)"
      return
    fi
    if ! running_pid >/dev/null; then
      log "tansu exited during start-up:"; tail -20 "$LOG_FILE" >&2; exit 1
    fi
    sleep 0.2
  done
  log "tansu did not answer a metadata request within 20 s"; tail -20 "$LOG_FILE" >&2; exit 1
}

stop() {
  if pid=$(running_pid); then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped (pid $pid)"
  fi
  rm -f "$PID_FILE"
}

topics() {
  local topology=${1:?usage: broker.sh topics TOPOLOGY}
  (cd "$ROOT" && cargo run --quiet --bin ragstream -- topics create --topology "$topology")
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) answers ;;
  topics) shift; topics "$@" ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
