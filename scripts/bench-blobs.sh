#!/usr/bin/env bash
# Blob sync benchmark (not a test): PUT and GET throughput over HTTP with 1 KiB and 1 MiB
# files on files + SQLite and on S3 + PostgreSQL. Figures go to the README's benchmark section.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh up
eval "$(scripts/services.sh env)"
cargo build --release --locked -p api --bins --example bench_blobs
target_dir="${CARGO_TARGET_DIR:-target}"
"$target_dir/release/examples/bench_blobs" "$@"
