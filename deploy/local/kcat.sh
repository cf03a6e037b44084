#!/usr/bin/env bash
# kcat that works against the local tansu broker.
#
#   deploy/local/kcat.sh -b 127.0.0.1:9092 -L
#   seq 1000 | deploy/local/kcat.sh -P -b 127.0.0.1:9092 -t TOPIC
#
# Why this exists: Debian bookworm's kcat links librdkafka 2.0.2, which cannot parse tansu's
# ApiVersion v3 response ("Protocol read buffer underflow for ApiVersion v3 ... expected
# 216172782113783806 bytes", reported as "ApiVersionRequest failed: Local: Read underflow"). The
# librdkafka that rdkafka-sys vendors (what the Rust code uses) parses it fine. kcat only needs
# the librdkafka.so.1 ABI, so we build that newer librdkafka as a shared library once, cache it
# outside the repository, and run Debian's kcat binary against it via LD_LIBRARY_PATH.
#
# Arguments are passed to kcat unchanged; stdout is kcat's alone (build chatter goes to stderr
# and a log file), so the script can sit in pipelines. The first run builds librdkafka (30-70 s
# on 2 cores, measured); later runs only exec.
#
# Environment: RAGSTREAM_CACHE_DIR (default ~/.cache/ragstream) holds librdkafka-<version>/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE_DIR=${RAGSTREAM_CACHE_DIR:-$HOME/.cache/ragstream}
CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
JOBS=2 # the machine has 2 cores; more only thrashes

log() { echo "kcat.sh: $*" >&2; }

sudo_if_needed() {
  if [[ $(id -u) -ne 0 ]]; then sudo "$@"; else "$@"; fi
}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  # A stale or empty package index is the usual reason an install fails on a fresh machine;
  # only pay for `apt-get update` when the install actually needs it.
  if ! sudo_if_needed apt-get install -y -qq --no-install-recommends "$@" >&2; then
    sudo_if_needed apt-get update -qq >&2
    sudo_if_needed apt-get install -y -qq --no-install-recommends "$@" >&2
  fi
}

# The Debian binary is reused (only its library is swapped), so the package must be present.
if ! command -v kcat >/dev/null; then
  log "installing kcat (Debian package)"
  apt_install kcat
fi
KCAT=$(command -v kcat)

# Newest vendored librdkafka in the cargo registry. `sort -V` on the directory names orders
# rdkafka-sys versions correctly; the "+X.Y.Z" build-metadata suffix is the librdkafka version.
find_source() {
  local d
  for d in "$CARGO_HOME"/registry/src/*/rdkafka-sys-*/librdkafka; do
    # Sort key is the crate directory name alone, so the registry directory cannot skew it.
    if [[ -f $d/src/rdkafka.h ]]; then printf '%s\t%s\n' "$(basename "$(dirname "$d")")" "$d"; fi
  done | sort -V -k1,1 | tail -n1 | cut -f2
}

SRC=$(find_source)
if [[ -z $SRC ]]; then
  # The crate source only lands in the registry once cargo has fetched the lockfile's deps.
  log "no rdkafka-sys source in $CARGO_HOME/registry; running cargo fetch in $ROOT"
  (cd "$ROOT" && cargo fetch >&2)
  SRC=$(find_source)
  [[ -n $SRC ]] || { log "rdkafka-sys source still missing after cargo fetch"; exit 1; }
fi

# Read the version from the header rather than the directory name, so the cache key is exactly
# what gets built (RD_KAFKA_VERSION is 0xMMmmrrpp; pp=0xff means a final release).
hexver=$(sed -n 's/^#define RD_KAFKA_VERSION *0x\([0-9a-fA-F]\{8\}\).*/\1/p' "$SRC/src/rdkafka.h")
[[ -n $hexver ]] || { log "cannot read RD_KAFKA_VERSION from $SRC/src/rdkafka.h"; exit 1; }
VERSION=$((16#${hexver:0:2})).$((16#${hexver:2:2})).$((16#${hexver:4:2}))
PREFIX=$CACHE_DIR/librdkafka-$VERSION
# --no-download: mklove must not fetch anything (no network here besides package registries).
# --enable-zstd makes zstd mandatory rather than "try": the Rust side builds rdkafka with zstd,
# and Debian's librdkafka had it, so a kcat that silently lacked it could not read zstd batches.
# Other optional features (curl/OIDC, GSSAPI) stay "try"; local plaintext use needs none.
CONFIGURE_ARGS=(--prefix="$PREFIX" --no-download --enable-zstd)
# Written last, so an interrupted build is detected and redone instead of half-used. It records
# the configure arguments, so changing them in this script triggers a rebuild.
STAMP=$PREFIX/.complete
RECIPE="configure ${CONFIGURE_ARGS[*]}"

build_librdkafka() {
  local logfile start
  logfile=$CACHE_DIR/librdkafka-$VERSION-build.log
  # Build in a scratch copy: configure and make write into the source tree, and the cargo
  # registry copy must stay pristine (cargo may reuse it for rdkafka-sys builds). A scratch dir
  # left by a killed earlier build is removed here; the caller holds this version's lock.
  rm -rf "$CACHE_DIR/librdkafka-$VERSION-scratch."*
  WORK=$(mktemp -d "$CACHE_DIR/librdkafka-$VERSION-scratch.XXXXXX")
  # EXIT, not RETURN: failures below exit the script; on success the final exec skips traps,
  # so the scratch dir is removed explicitly at the end of this function.
  trap 'rm -rf "$WORK"' EXIT

  # Compiler and the ssl/zlib headers come from the project's normal dependency script;
  # zstd headers are only needed here, so they are not part of it.
  if ! command -v cc >/dev/null || ! command -v make >/dev/null; then
    "$ROOT/deploy/local/deps.sh" >&2
  fi
  if ! dpkg-query -W -f='${Status}' libzstd-dev 2>/dev/null | grep -q "install ok installed"; then
    log "installing libzstd-dev (Debian package)"
    apt_install libzstd-dev
  fi

  log "building librdkafka $VERSION (shared) into $PREFIX; log: $logfile"
  start=$SECONDS
  rm -rf "$PREFIX"
  cp -a "$SRC/." "$WORK/"
  # Explicit && chain: `set -e` does not apply inside a subshell used as an `if` condition.
  # Only the C library is built: kcat does not use librdkafka++ or the examples.
  if ! (
    cd "$WORK" &&
      ./configure "${CONFIGURE_ARGS[@]}" &&
      make -C src -j"$JOBS" lib &&
      make -C src install
  ) >"$logfile" 2>&1; then
    log "librdkafka build failed; last lines of $logfile:"
    tail -n 30 "$logfile" >&2
    rm -rf "$PREFIX"
    exit 1
  fi
  echo "$RECIPE" >"$STAMP"
  rm -rf "$WORK"
  trap - EXIT
  log "built librdkafka $VERSION in $((SECONDS - start))s"
}

built() { [[ -f $STAMP && $(<"$STAMP") == "$RECIPE" ]]; }

if ! built; then
  mkdir -p "$CACHE_DIR"
  # Two kcat.sh invocations at once (e.g. a producer and a consumer in a demo) must not both
  # build into the same prefix; the second waits and then finds the stamp.
  exec 9>"$CACHE_DIR/librdkafka-$VERSION.lock"
  flock 9
  built || build_librdkafka
  exec 9>&-
fi

export LD_LIBRARY_PATH=$PREFIX/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
exec "$KCAT" "$@"
