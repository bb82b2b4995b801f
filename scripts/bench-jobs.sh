#!/usr/bin/env bash
# Job engine benchmark (not a test): end-to-end no-op jobs/s on SQLite, PostgreSQL and
# PostgreSQL + Redis with 1 and 2 engram-worker processes, pick-up latency of single jobs by
# an idle worker process, and SSE log latency across processes. Figures go to the README's
# benchmark section.
#   scripts/bench-jobs.sh [jobs per run, default 20000] [sqlite|postgres|postgres+redis: that stack only]
#   scripts/bench-jobs.sh latency      (pick-up latency on every stack only)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh up
eval "$(scripts/services.sh env)"
cargo build --release --locked -p api -p worker --bins --example bench_jobs
target_dir="${CARGO_TARGET_DIR:-target}"
"$target_dir/release/examples/bench_jobs" "$@"
