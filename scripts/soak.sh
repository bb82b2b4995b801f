#!/usr/bin/env bash
# Soak test of job delivery (not a benchmark): on SQLite, PostgreSQL and PostgreSQL + Redis, a
# fresh deployment (engram-api with its in-process worker, plus one engram-worker on the
# PostgreSQL stacks) is driven by many concurrent HTTP clients — tenants writing blobs,
# memories and git memory, ingesting and importing, an administrator submitting every other
# kind (delayed, prioritised, failing-then-retried jobs, upkeep) — then every job must become
# final. Prints the largest pick-up delay per kind and the consumers' restarts; exits 1 when a
# job was stranded. Debug build (the one the tests use); figures go to the README.
#   scripts/soak.sh [seconds of load per stack, default $ENGRAM_SOAK_SECS or 200] [sqlite|postgres|postgres+redis ...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh up
eval "$(scripts/services.sh env)"
cargo build --locked -p api -p worker --bins --example soak
seconds="${1:-${ENGRAM_SOAK_SECS:-200}}"
[[ $# -gt 0 ]] && shift
"${CARGO_TARGET_DIR:-target}/debug/examples/soak" "$seconds" "$@"
