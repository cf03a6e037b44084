#!/usr/bin/env bash
# Installs the Debian packages the build, the tests and the demo need, if any is missing.
# Safe to run repeatedly: it does nothing when everything is present.
set -euo pipefail

PACKAGES=(
  protobuf-compiler   # lance (LanceDB) generates code from .proto files at build time
  libprotobuf-dev     # ... and imports the well-known types (google/protobuf/empty.proto)
  kcat                # demo producer/consumer and the benchmark's baseline
  libssl-dev          # librdkafka with SSL/SASL support
  zlib1g-dev          # librdkafka compression
  pkg-config
  build-essential     # librdkafka is compiled from source (vendored)
  postgresql-client   # psql, to prepare the broker's PostgreSQL storage
  libzstd-dev         # zstd for the shared librdkafka that deploy/local/kcat.sh builds
)

missing=()
for package in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "deps: installing ${missing[*]}" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
