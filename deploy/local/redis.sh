#!/usr/bin/env bash
# The Redis server the default topology's cost control (budgets, rate limits, response cache,
# replay records) and its tests use. Many machines run one already on 127.0.0.1:6379; a fresh
# Debian machine has none, so this installs Debian's redis-server and starts it when nothing
# answers.
#
#   deploy/local/redis.sh install     install Debian's redis-server if it is missing
#   deploy/local/redis.sh start       start it on 127.0.0.1:$RAGSTREAM_REDIS_PORT unless a server answers
#   deploy/local/redis.sh stop        stop the server this script started (by its PID)
#   deploy/local/redis.sh status      exit 0 when a Redis server answers PING on the port
#
# The server this script starts keeps nothing on disk (no RDB snapshots, no AOF): the tests and
# the demo need shared state between processes, not durability. Every command is safe to run twice.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUN_DIR=${RAGSTREAM_RUN_DIR:-$ROOT/.run}
HOST=127.0.0.1
PORT=${RAGSTREAM_REDIS_PORT:-6379}
PID_FILE=$RUN_DIR/redis.pid
LOG_FILE=$RUN_DIR/redis.log

log() { echo "redis: $*" >&2; }

answers() {
  # A RESP PING over bash's /dev/tcp: no client needed to ask.
  local reply
  reply=$(timeout 3 bash -c "exec 3<>/dev/tcp/$HOST/$PORT && printf 'PING\r\n' >&3 && head -c 7 <&3" 2>/dev/null) &&
    [[ $reply == "+PONG"* ]]
}

install() {
  if command -v redis-server >/dev/null; then
    return
  fi
  log "installing Debian's redis-server"
  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # --no-install-recommends, and the package's own service is not what the tests use: this
  # script starts its own server on the port the tests read.
  $sudo apt-get install -y -qq --no-install-recommends redis-server >/dev/null
}

running_pid() {
  [[ -f $PID_FILE ]] || return 1
  local pid
  pid=$(cat "$PID_FILE")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start() {
  if answers; then
    return
  fi
  install
  mkdir -p "$RUN_DIR"
  log "starting redis-server on $HOST:$PORT (in memory, nothing saved)"
  redis-server --bind "$HOST" --port "$PORT" --save "" --appendonly no --daemonize no \
    >"$LOG_FILE" 2>&1 &
  echo $! >"$PID_FILE"
  for _ in $(seq 1 100); do
    if answers; then
      log "ready (pid $(cat "$PID_FILE"), log $LOG_FILE)"
      return
    fi
    if ! running_pid >/dev/null; then
      log "redis-server exited during start-up:"; tail -20 "$LOG_FILE" >&2; exit 1
    fi
    sleep 0.1
  done
  log "redis-server did not answer PING within 10 s"; tail -20 "$LOG_FILE" >&2; exit 1
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

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) answers ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
