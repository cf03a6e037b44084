#!/usr/bin/env bash
# Runs every check and test on a fresh or a used machine: installs what is missing (Debian
# packages, the tansu broker), starts the broker if none answers, then formatting, lints, unit
# tests and integration tests against the real broker. `.ci/run` calls exactly this.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# Outside the clone, so CI reruns on a fresh clone are incremental.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/ragstream/target}
export PATH="$HOME/.cargo/bin:$PATH"

deploy/local/deps.sh
deploy/local/broker.sh install

started_broker=false
if ! deploy/local/broker.sh status; then
  deploy/local/broker.sh start
  started_broker=true
fi
cleanup() { if $started_broker; then deploy/local/broker.sh stop; fi; }
trap cleanup EXIT

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --quiet --all-targets -- -D warnings
echo "== cargo test"
# Integration tests each spawn ragstream processes; three at a time fit 2 cores.
cargo test --all-targets -- --test-threads 3
