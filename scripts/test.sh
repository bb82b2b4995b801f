#!/usr/bin/env bash
# Runs every test on every backend: brings up the real services (PostgreSQL + pgvector,
# Redis, S3, the embedding model, Chromium), checks formatting and lints, runs the whole
# workspace's tests with every service required, then schemathesis over the API document
# (scripts/schemathesis.sh) and a short soak of job delivery on every stack (scripts/soak.sh,
# 20 s of load each), then stops the services it started.
#   ENGRAM_KEEP_SERVICES=1 scripts/test.sh   leave the services running afterwards
#   scripts/test.sh -- <cargo test args>     pass a filter, e.g. -- blob_suite (skips schemathesis and the soak)
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo is not installed: install Rust (rustup) first" >&2; exit 1; }
scripts/build-deps.sh

scripts/services.sh up
if [[ "${ENGRAM_KEEP_SERVICES:-0}" != 1 ]]; then
  trap 'scripts/services.sh down' EXIT
fi
eval "$(scripts/services.sh env)"
export ENGRAM_TEST_REQUIRE_SERVICES=1

[[ "${1:-}" == "--" ]] && shift

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test" >&2
cargo test --workspace --locked "$@"
if [[ $# -eq 0 ]]; then
  echo "== schemathesis over /openapi.json" >&2
  scripts/schemathesis.sh
  echo "== soak of job delivery, 20 s per stack" >&2
  scripts/soak.sh 20
fi
