#!/usr/bin/env bash
# Builds and starts engram-api on the embedded default: SQLite, files and in-process workers
# under ./data, listening on http://127.0.0.1:8000 (set ENGRAM_BIND / ENGRAM_DATA_DIR or any
# variable from the README to change that). Arguments go to engram-api, e.g. `scripts/run.sh config`.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo is not installed: install Rust (rustup) first" >&2; exit 1; }
scripts/build-deps.sh
if [[ -z "${ENGRAM_MODEL_DIR:-}" ]]; then
  ENGRAM_MODEL_DIR="$(scripts/install-model.sh)"
  export ENGRAM_MODEL_DIR
fi
cargo build --release --locked -p api --bin engram-api
target_dir="${CARGO_TARGET_DIR:-target}"
bind="${ENGRAM_BIND:-127.0.0.1:8000}"
echo "Starting Engram on http://$bind  (dashboard: http://$bind/  API docs: http://$bind/docs)" >&2
exec "$target_dir/release/engram-api" "$@"
