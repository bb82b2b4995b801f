#!/usr/bin/env bash
# Runs schemathesis over /openapi.json of a fresh engram-api on the embedded default, once as
# an administrator (the static API_KEY) and once as a self-registered user, with the checks
# `not_a_server_error`, `status_code_conformance`, `response_schema_conformance`,
# `positive_data_acceptance` and `negative_data_rejection` (settings and the per-operation
# exceptions, each with its reason, are in schemathesis.toml). Exits non-zero on any failure.
#   ENGRAM_SCHEMATHESIS_EXAMPLES=N   examples per operation and phase (default 20)
# Expects the services' venv (scripts/services.sh up) and a debug build of engram-api
# (scripts/test.sh builds it); the server's log goes to $ENGRAM_SCHEMATHESIS_LOG.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${ENGRAM_SERVICES_DIR:-/tmp/engram-services}/venv"
st="$venv/bin/schemathesis"
[[ -x "$st" ]] || { echo "schemathesis is not installed: run scripts/services.sh up" >&2; exit 1; }
target_dir="${CARGO_TARGET_DIR:-target}"
cargo build --locked -q -p api --bin engram-api
binary="$target_dir/debug/engram-api"

work=$(mktemp -d)
log="${ENGRAM_SCHEMATHESIS_LOG:-$work/engram-api.log}"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
admin_key="schemathesis-admin-$(date +%s%N)"

ENGRAM_BIND="127.0.0.1:$port" ENGRAM_DATA_DIR="$work/data" API_KEY="$admin_key" \
  RUST_LOG="${RUST_LOG:-warn}" \
  "$binary" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$work"' EXIT

for _ in $(seq 1 300); do
  curl -fsS "$base/health" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$log" >&2; echo "engram-api did not start" >&2; exit 1; }
  sleep 0.1
done

# The user's run goes with an API key holding every scope: a session token would be spent by
# schemathesis calling `POST /api/v1/auth/logout` with it.
session=$(curl -fsS -X POST "$base/api/v1/auth/register" -H 'content-type: application/json' \
  -d '{"email": "schemathesis@example.com", "password": "a long enough password"}' \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
user_token=$(curl -fsS -X POST "$base/api/v1/api-keys" -H 'content-type: application/json' \
  -H "Authorization: Bearer $session" \
  -d '{"name": "schemathesis", "scopes": ["blobs:rw", "federation:read", "federation:push", "memories:rw", "jobs:rw", "evals:rw"]}' \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["secret"])')

examples="${ENGRAM_SCHEMATHESIS_EXAMPLES:-20}"
status=0
for who in admin user; do
  if [[ $who == admin ]]; then token=$admin_key; else token=$user_token; fi
  echo "== schemathesis as $who ($examples examples per operation)" >&2
  "$st" --config-file schemathesis.toml run "$base/openapi.json" \
    --max-examples "$examples" --seed 1 \
    -H "Authorization: Bearer $token" --no-color || status=1
done
if [[ $status -ne 0 ]]; then
  echo "schemathesis found failures; the server's log: $log" >&2
  cp "$log" /tmp/engram-schemathesis-api.log 2>/dev/null || true
fi
exit $status
