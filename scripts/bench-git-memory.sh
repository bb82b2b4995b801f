#!/usr/bin/env bash
# Git memory benchmark (not a test): generated corpora of 2,000 and 5,000 blocks, index
# rebuild time, /memory/search p50/p95 over HTTP and one session's commit + index update, on
# the embedded default. Figures go to the README's benchmark section.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p api --bins --example bench_git_memory
target_dir="${CARGO_TARGET_DIR:-target}"
"$target_dir/release/examples/bench_git_memory" "$@"
