#!/usr/bin/env bash
# Prepares the Python side of the embedding benchmark: a virtualenv with sentence-transformers
# and PyTorch, all from PyPI, for benches/python/embed_st.py.
#
#   PY=$(deploy/local/python-bench.sh | tail -n 1)
#   "$PY" benches/python/embed_st.py models/all-MiniLM-L6-v2 texts.json
#
# The venv lives at $RAGSTREAM_PY_VENV (default ~/.cache/ragstream/st-venv), outside the work
# tree. Logs go to stderr; the last line on stdout is the venv's python.
# Safe to run repeatedly: once the pinned set is in place it only checks and prints the path.
#
# Why it looks like this: PyTorch's CPU-only wheels live on a separate index that this machine
# cannot reach, and every torch wheel on PyPI for Linux x86_64 is a CUDA build whose
# libtorch_cpu.so itself links libcudart and libcupti, so the NVIDIA runtime wheels (~3 GB
# installed) cannot be left out. What is left out is what torch never loads for inference on the
# CPU: triton (~1 GB, only used by torch.compile), cuda-bindings and the CCCL headers. pip cannot
# drop a dependency, so the install is done by uv (from PyPI, into the venv) with overrides.
set -euo pipefail

VENV=${RAGSTREAM_PY_VENV:-$HOME/.cache/ragstream/st-venv}
PYTHON=${RAGSTREAM_PYTHON:-python3}
log() { echo "python-bench: $*" >&2; }

UV_VERSION=0.13.9
REQUIREMENTS=(
  torch==2.15.0
  sentence-transformers==6.2.0
  transformers==5.24.0
)
# A requirement whose marker is never true removes that package from the resolution.
OVERRIDES='triton; sys_platform == "never"
cuda-bindings; sys_platform == "never"
nvidia-cuda-cccl; sys_platform == "never"'

STAMP="$VENV/.ragstream-bench"
WANTED="uv==$UV_VERSION ${REQUIREMENTS[*]} | ${OVERRIDES//$'\n'/ | }"

ready() {
  [[ -x $VENV/bin/python && -f $STAMP && $(<"$STAMP") == "$WANTED" ]] &&
    "$VENV/bin/python" - "${REQUIREMENTS[@]}" 2>/dev/null <<'PY'
import importlib.metadata as metadata, sys
for requirement in sys.argv[1:]:
    name, version = requirement.split("==")
    if metadata.version(name) != version:
        sys.exit(1)
PY
}

if ! ready; then
  started=$SECONDS
  if ! "$VENV/bin/python" -c "" 2>/dev/null; then
    log "creating virtualenv $VENV with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
  fi
  rm -f "$STAMP"
  log "installing uv==$UV_VERSION"
  "$VENV/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check "uv==$UV_VERSION" >&2
  overrides=$(mktemp)
  trap 'rm -f "$overrides"' EXIT
  printf '%s\n' "$OVERRIDES" >"$overrides"
  # uv does not read pip's settings: hand it the CA bundle pip is told to use, if any.
  if [[ -n ${PIP_CERT:-} && -z ${SSL_CERT_FILE:-} ]]; then
    export SSL_CERT_FILE=$PIP_CERT
  fi
  log "installing ${REQUIREMENTS[*]} (CUDA build of torch from PyPI, without triton; a few GB)"
  # --no-cache: no second copy of the NVIDIA libraries under ~/.cache/uv.
  "$VENV/bin/uv" pip install --no-cache --python "$VENV/bin/python" \
    --overrides "$overrides" "${REQUIREMENTS[@]}" >&2
  log "checking that torch and sentence-transformers import"
  "$VENV/bin/python" -c 'import torch, sentence_transformers; torch.ones(2) @ torch.ones(2)' >&2
  printf '%s\n' "$WANTED" >"$STAMP"
  log "ready in $((SECONDS - started)) s ($(du -sh "$VENV" | cut -f1))"
fi

echo "$VENV/bin/python"
