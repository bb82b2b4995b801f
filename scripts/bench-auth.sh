#!/usr/bin/env bash
# Password hashing benchmark (not a test): argon2id hash and verify times with Engram's
# parameters (19 MiB, 2 passes, 1 lane). Figures go to the README's benchmark section.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p api --example bench_auth
"${CARGO_TARGET_DIR:-target}/release/examples/bench_auth"
