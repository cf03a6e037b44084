#!/usr/bin/env bash
# Runs the fault scenarios (issue 21) against the real broker, Redis and the local S3 server, and
# prints one table: scenario, messages in, outputs, lost, duplicates, dead-lettered, leaked.
#
#   scripts/chaos.sh              every scenario once
#   scripts/chaos.sh --rounds 3   every scenario three times (a row per run)
#
# Each scenario is an integration test (they are part of scripts/test.sh too): it asserts its
# policy, then appends its counts to the report, so a row exists only for a run that passed. A
# failed scenario fails the script after the table. Installs and starts what is missing, as
# scripts/test.sh does, and stops what it started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/ragstream/target}
export PATH="$HOME/.cargo/bin:$PATH"
# The same compiler settings as scripts/test.sh, so the two share one build of the crate.
export RUSTC_WORKSPACE_WRAPPER=${RUSTC_WORKSPACE_WRAPPER-$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)}
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

rounds=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: scripts/chaos.sh [--rounds N]" >&2; exit 2 ;;
  esac
done
if ! [[ $rounds =~ ^[1-9][0-9]*$ ]]; then
  echo "--rounds must be a positive whole number, not '$rounds'" >&2
  exit 2
fi

# The scenarios, as filters on the integration tests' names.
SCENARIOS=(
  concurrent_writers::
  object_storage::an_object_store_outage_is_retried_then_dead_lettered_and_nothing_is_lost
  cost_control::without_redis_questions_fail_open_or_closed_as_configured_and_no_call_is_billed_twice
  model_faults::
  broker_restart::
  hostile_input::
  secrets::
)

deploy/local/deps.sh
deploy/local/models.sh
deploy/local/broker.sh install
deploy/local/s3.sh install
started=()
for service in broker redis s3; do
  if ! "deploy/local/$service.sh" status; then
    "deploy/local/$service.sh" start
    started+=("$service")
  fi
done
report=$(mktemp)
cleanup() {
  for service in "${started[@]}"; do "deploy/local/$service.sh" stop; done
  rm -f "$report"
}
trap cleanup EXIT

# The broker restart on PostgreSQL storage needs tansu's schema, which its crate does not ship.
if [[ -n ${RAGSTREAM_TANSU_PG_SCHEMA:-} ]]; then
  export RAGSTREAM_CHAOS_PG=1
else
  echo "note: RAGSTREAM_TANSU_PG_SCHEMA is unset (tansu v0.6.0's etc/initdb.d/010-schema.sql):" \
    "the broker restart on PostgreSQL storage is not run" >&2
fi
cargo test --quiet --features model-files --test integration --no-run
status=0
for ((round = 1; round <= rounds; round++)); do
  echo "== round $round of $rounds"
  # One scenario at a time: each one's counts are its own, and the replicas get the cores.
  RAGSTREAM_CHAOS_REPORT=$report cargo test --quiet --features model-files --test integration -- \
    --test-threads 1 --include-ignored "${SCENARIOS[@]}" || status=$?
done

python3 - "$report" <<'EOF'
import json, sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
columns = ["scenario", "messages_in", "outputs", "lost", "duplicates", "dead_lettered", "leaked"]
titles = ["scenario", "in", "outputs", "lost", "duplicates", "dead-lettered", "leaked"]
table = [titles] + [[str(row[c]) for c in columns] for row in rows]
widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
for n, line in enumerate(table):
    print(" | ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))))
    if n == 0:
        print("-+-".join("-" * w for w in widths))
print()
for row in rows:
    if row.get("note"):
        print(f"{row['scenario']}: {row['note']}")
EOF
if [[ $status -ne 0 ]]; then
  echo "a scenario failed (its row is missing above); see the test output" >&2
fi
exit $status
