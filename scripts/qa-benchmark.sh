#!/usr/bin/env bash
# Grounded-QA benchmark: every question of corpus/questions.jsonl and corpus/qa-benchmark.jsonl
# asked through the real pipeline (local broker, `ragstream run` on the embedded default topology
# with each candidate's models, `ragstream ask`), once per candidate; prints accuracy, citations,
# refusals, latency and tokens/s (scripts/qa-benchmark.py explains each column).
#
#     scripts/qa-benchmark.sh                         # every candidate, release build
#     scripts/qa-benchmark.sh --candidates extractive --show-answers
#     QA_PROFILE=dev scripts/qa-benchmark.sh          # the test build (figures for debugging only)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/ragstream/target}
export PATH="$HOME/.cargo/bin:$PATH"
export RAGSTREAM_BROKERS=${RAGSTREAM_BROKERS:-127.0.0.1:9092}

deploy/local/deps.sh
deploy/local/models.sh
started_broker=false
if ! deploy/local/broker.sh status; then
  deploy/local/broker.sh start
  started_broker=true
fi
trap 'if $started_broker; then deploy/local/broker.sh stop; fi' EXIT

profile=${QA_PROFILE:-release}
cargo build --quiet --profile "$profile" --bin ragstream
dir=$profile
[[ $profile == dev ]] && dir=debug
python3 scripts/qa-benchmark.py --bin "$CARGO_TARGET_DIR/$dir/ragstream" "$@"
