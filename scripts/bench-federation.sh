#!/usr/bin/env bash
# Federation benchmark (not a test): pushes/s and pulls/s over HTTP (3 agents x 1,000 fact
# hashes x 20 topics, a few concurrent clients, 5 s a phase) and a 100,000-hash push, on the
# embedded default and, when DATABASE_URL is set, on that PostgreSQL too (each run in an
# account of its own). Figures go to the README's benchmark section.
#   scripts/bench-federation.sh
#   DATABASE_URL=postgres://... scripts/bench-federation.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p api --bins --example bench_federation
target_dir="${CARGO_TARGET_DIR:-target}"
"$target_dir/release/examples/bench_federation" "$@"
