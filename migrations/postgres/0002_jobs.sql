-- Engram's own record of every job, whichever queue delivered it: what the API and the
-- dashboard read. Times are milliseconds since the Unix epoch (UTC).
CREATE TABLE jobs (
    id                TEXT    PRIMARY KEY,          -- ULID
    kind              TEXT    NOT NULL,
    owner             TEXT    NOT NULL,
    payload           JSONB   NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled')),
    attempt           INTEGER NOT NULL DEFAULT 0,   -- attempts started so far
    max_attempts      INTEGER NOT NULL,
    priority          INTEGER NOT NULL DEFAULT 0,   -- higher runs first
    run_at            BIGINT  NOT NULL,             -- not before (delayed jobs, retry backoff)
    progress          INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    progress_message  TEXT,
    result            JSONB,
    last_error        TEXT,
    cancel_requested  BOOLEAN NOT NULL DEFAULT FALSE,
    worker_id         TEXT,
    parent_id         TEXT    REFERENCES jobs (id) ON DELETE SET NULL,
    idempotency_key   TEXT,
    created_at        BIGINT  NOT NULL,
    started_at        BIGINT,
    finished_at       BIGINT,
    updated_at        BIGINT  NOT NULL
);
CREATE UNIQUE INDEX jobs_owner_idempotency_key ON jobs (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_status_kind ON jobs (status, kind);
CREATE INDEX jobs_kind_finished ON jobs (kind, finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_worker_running ON jobs (worker_id) WHERE status = 'running';

-- Lines a job's handler logged, numbered from 1 per job.
CREATE TABLE job_logs (
    job_id  TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq     BIGINT  NOT NULL,
    at      BIGINT  NOT NULL,
    level   TEXT    NOT NULL,
    line    TEXT    NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- Worker processes (in engram-api or engram-worker) and their heartbeats.
CREATE TABLE workers (
    id           TEXT    PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    kinds        JSONB   NOT NULL,
    concurrency  INTEGER NOT NULL,
    started_at   BIGINT  NOT NULL,
    last_seen    BIGINT  NOT NULL,
    stopping     BOOLEAN NOT NULL DEFAULT FALSE
);

-- Recurring jobs: a cron expression in a time zone enqueues `kind` with `payload`.
CREATE TABLE schedules (
    id           TEXT    PRIMARY KEY,
    owner        TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    payload      JSONB   NOT NULL,
    cron         TEXT    NOT NULL,
    timezone     TEXT    NOT NULL,
    paused       BOOLEAN NOT NULL DEFAULT FALSE,
    next_run_at  BIGINT,
    last_run_at  BIGINT,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE NOT paused;
