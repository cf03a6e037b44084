#!/usr/bin/env bash
# The local S3-compatible server (moto) used by the integration tests of LanceDB on s3:// URIs.
#
#   deploy/local/s3.sh install              install moto[server] (pinned) into its venv if missing
#   deploy/local/s3.sh start                start it on 127.0.0.1:9000 and wait until it answers
#   deploy/local/s3.sh stop                 stop the server this script started (by its PID)
#   deploy/local/s3.sh status               exit 0 when an S3 server answers on the port
#   deploy/local/s3.sh bucket NAME          create the bucket NAME (idempotent)
#   deploy/local/s3.sh env                  print the client environment (also printed by start)
#
# moto keeps everything in memory: buckets and objects are gone when the server stops. It accepts
# any credentials and does not check signatures, but an unsigned GET of an object is refused (403,
# anonymous access to a private object): sign by hand with curl --aws-sigv4 "aws:amz:us-east-1:s3"
# --user test:test. It honours If-None-Match: * and If-Match on PutObject (412 when they fail).
# A body sent as application/x-www-form-urlencoded (curl --data's default) is stored empty.
# The venv lives at $RAGSTREAM_S3_VENV (default ~/.cache/ragstream/moto-venv), outside the work
# tree; the port is $RAGSTREAM_S3_PORT. Every command is safe to run twice.
set -euo pipefail

MOTO_VERSION=5.2.5
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUN_DIR=${RAGSTREAM_RUN_DIR:-$ROOT/.run}
VENV=${RAGSTREAM_S3_VENV:-$HOME/.cache/ragstream/moto-venv}
PYTHON=${RAGSTREAM_PYTHON:-python3}
HOST=127.0.0.1
PORT=${RAGSTREAM_S3_PORT:-9000}
ENDPOINT=http://$HOST:$PORT
PID_FILE=$RUN_DIR/s3.pid
LOG_FILE=$RUN_DIR/s3.log
STAMP=$VENV/.ragstream-moto
WANTED="moto[server]==$MOTO_VERSION"

log() { echo "s3: $*" >&2; }

answers() {
  # An S3 ListBuckets, not just an open port: the server must actually speak S3.
  local body
  body=$(curl -sf --max-time 5 "$ENDPOINT/" 2>/dev/null) && [[ $body == *ListAllMyBucketsResult* ]]
}

installed() {
  [[ -x $VENV/bin/moto_server && -f $STAMP && $(<"$STAMP") == "$WANTED" ]]
}

install() {
  if installed; then
    return
  fi
  local started=$SECONDS
  if ! "$VENV/bin/python" -c "" 2>/dev/null; then
    log "creating virtualenv $VENV with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
  fi
  rm -f "$STAMP"
  log "installing $WANTED"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$WANTED" >&2
  echo "$WANTED" >"$STAMP"
  log "installed $WANTED in $((SECONDS - started)) s"
}

client_env() {
  echo "AWS_ENDPOINT=$ENDPOINT AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1"
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
    client_env
    return
  fi
  if answers; then
    log "an S3 server not started by this script already answers on $HOST:$PORT; using it"
    client_env
    return
  fi
  install
  mkdir -p "$RUN_DIR"
  log "starting moto $MOTO_VERSION on $HOST:$PORT (in-memory storage)"
  nohup "$VENV/bin/moto_server" -H "$HOST" -p "$PORT" >"$LOG_FILE" 2>&1 &
  echo $! >"$PID_FILE"
  for _ in $(seq 1 100); do
    if answers; then
      log "ready (pid $(cat "$PID_FILE"), log $LOG_FILE); client environment:"
      client_env
      return
    fi
    if ! running_pid >/dev/null; then
      log "moto_server exited during start-up:"; tail -20 "$LOG_FILE" >&2; exit 1
    fi
    sleep 0.2
  done
  log "moto_server did not answer ListBuckets within 20 s"; tail -20 "$LOG_FILE" >&2; exit 1
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

bucket() {
  local name=${1:?usage: s3.sh bucket NAME}
  # HEAD answers 200 when the bucket exists; moto answers a repeated PUT with 409
  # BucketAlreadyOwnedByYou outside us-east-1, so check first rather than rely on PUT.
  if curl -sf --max-time 5 -o /dev/null -I "$ENDPOINT/$name"; then
    log "bucket $name already exists"
    return
  fi
  curl -sSf --max-time 10 -o /dev/null -X PUT "$ENDPOINT/$name"
  log "created bucket $name"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) answers ;;
  bucket) shift; bucket "$@" ;;
  env) client_env ;;
  *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
