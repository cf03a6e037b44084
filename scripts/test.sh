#!/usr/bin/env bash
# Runs every check and test on a fresh or a used machine: installs what is missing (Debian
# packages, the tansu broker, the crabka Schema Registry, the models, a local S3 server, the
# deployment checks' tools), starts the broker, the registry and the S3 server if none answers,
# then formatting, lints, unit tests and integration tests against the real broker and Redis
# (started here when none answers). `.ci/run` calls exactly this.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# Outside the clone, so CI reruns on a fresh clone are incremental.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/ragstream/target}
export PATH="$HOME/.cargo/bin:$PATH"

deploy/local/deps.sh
deploy/local/models.sh
# On a fresh machine the broker (tansu) is built from source: in the background, while the
# project builds, as the two together fill both cores better than one after the other. The
# deployment checks' tools (downloads, no compiling) are fetched alongside.
mkdir -p .run
# The Schema Registry (crabka) is built after it, in the same background job: two cargo
# installs at once would only compete for the same two cores.
(deploy/local/broker.sh install && deploy/local/registry.sh install) > .run/broker-install.log 2>&1 &
broker_install=$!
scripts/check-deploy.sh --install > .run/deploy-tools-install.log 2>&1 &
deploy_tools_install=$!

echo "== cargo fmt --check"
cargo fmt --check
# The stage modules are declared by the registry macro, where cargo fmt does not look.
rustfmt --check --edition 2021 src/stages/*.rs
echo "== module layers (no import cycle, README layout current)"
python3 scripts/check-layers.py
# Lints run inside the one real build, the way `cargo clippy` does it (clippy-driver as the
# workspace's compiler, `-D warnings`), instead of a separate `cargo clippy` pass: that pass
# type-checks the whole dependency graph a second time (lancedb, datafusion, arrow), about 11
# minutes on a fresh 2-core machine. Only this crate goes through clippy-driver; dependencies are
# compiled once, by rustc, and shared with `cargo run`, the demo and the benchmarks.
export RUSTC_WORKSPACE_WRAPPER=${RUSTC_WORKSPACE_WRAPPER-$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)}
if [[ -z $RUSTC_WORKSPACE_WRAPPER ]]; then
  echo "clippy-driver not found (rustup component add clippy): the lints cannot run" >&2
  exit 1
fi
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
echo "== clippy -D warnings + build of every target (lib, bins, tests, benches)"
# RAGSTREAM_BUILD_TIMINGS=1 writes cargo's per-crate timing report (cargo-timings/ in the target dir).
# `model-files`: the unit tests that read the downloaded models run too.
cargo test --quiet --workspace --all-targets --features model-files --no-run ${RAGSTREAM_BUILD_TIMINGS:+--timings}

if ! wait $broker_install; then
  cat .run/broker-install.log >&2
  echo "installing the broker or the schema registry failed" >&2
  exit 1
fi
# The audit table test reads Parquet with the DuckDB of the deployment tools' venv.
if ! wait $deploy_tools_install; then
  cat .run/deploy-tools-install.log >&2
  echo "installing the deployment checks' tools failed" >&2
  exit 1
fi
started_broker=false
if ! deploy/local/broker.sh status; then
  deploy/local/broker.sh start
  started_broker=true
fi
# Redis for cost control's shared state (budgets, rate limits, response cache): the machine's
# own when one answers, else Debian's redis-server started here.
started_redis=false
if ! deploy/local/redis.sh status; then
  deploy/local/redis.sh start
  started_redis=true
fi
# A local S3-compatible server (moto) for the index-on-object-storage test.
started_s3=false
if ! deploy/local/s3.sh status; then
  deploy/local/s3.sh start
  started_s3=true
fi
# The registry keeps its schemas in the broker, so it is started (and stopped) with it.
started_registry=false
if ! deploy/local/registry.sh status; then
  deploy/local/registry.sh start
  started_registry=true
fi
cleanup() {
  if $started_registry; then deploy/local/registry.sh stop; fi
  if $started_broker; then deploy/local/broker.sh stop; fi
  if $started_s3; then deploy/local/s3.sh stop; fi
  if $started_redis; then deploy/local/redis.sh stop; fi
}
trap cleanup EXIT

echo "== cargo test"
# Integration tests each spawn ragstream processes; three at a time fit 2 cores.
# (Benchmarks are compiled by clippy above and run with `cargo bench`, not here.)
log=$(mktemp)
cargo test --workspace --lib --bins --tests --features model-files -- --test-threads 3 2>&1 | tee "$log"
echo "== deployment artefacts (scripts/check-deploy.sh)"
deploy_status=0
scripts/check-deploy.sh || deploy_status=$?
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "summary: %d passed, %d failed\n", passed, failed }' "$log"
rm -f "$log"
exit $deploy_status
