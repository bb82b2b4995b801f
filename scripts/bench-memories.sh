#!/usr/bin/env bash
# Semantic memory benchmark (not a test): import rate with precomputed vectors, search p50/p95
# at 10,000 and 100,000 memories per user (semantic without the query embedding, keyword,
# hybrid with it), embedding throughput and WebSocket fan-out latency, on the embedded default
# and, when DATABASE_URL is set, on that PostgreSQL + pgvector too. Figures go to the README.
#   scripts/bench-memories.sh
#   DATABASE_URL=postgres://... scripts/bench-memories.sh
#   DATABASE_URL=postgres://... scripts/bench-memories.sh postgres   (PostgreSQL only)
#   DATABASE_URL=postgres://... scripts/bench-memories.sh postgres imports   (imports only)
set -euo pipefail
cd "$(dirname "$0")/.."
export ENGRAM_MODEL_DIR="${ENGRAM_MODEL_DIR:-$(scripts/install-model.sh)}"
cargo build --release --locked -p api --bins --example bench_memories
target_dir="${CARGO_TARGET_DIR:-target}"
"$target_dir/release/examples/bench_memories" "$@"
