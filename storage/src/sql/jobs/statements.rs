//! The SQL of the job store's plain statements, per database where they differ (the batch
//! statements) and shared otherwise. The statements that put jobs in turn are in `turns`.

/// The batch statements of one database. `insert_many` takes the JSON array of `NewRow` and
/// the creation time; `claim_many` the JSON array of ids, the worker and the time (it runs
/// inside a claim, on the jobs chosen in turn);
/// `succeed_many` the worker, the time and the JSON array of `Success`.
pub(super) struct BatchSql {
    pub insert_many: &'static str,
    pub claim_many: &'static str,
    pub succeed_many: &'static str,
}

/// `WHERE true` lets SQLite parse the `ON CONFLICT` after a `SELECT`. The unary `+` keeps
/// SQLite, which has no statistics, from scanning every queued or running job through the
/// status indexes instead of looking each id up by primary key.
pub(super) const SQLITE_BATCH_SQL: BatchSql = BatchSql {
    insert_many: "INSERT INTO jobs (id, kind, owner, payload, status, max_attempts, priority, run_at, \
         parent_id, idempotency_key, fair_seq, created_at, updated_at) \
         SELECT value->>'id', value->>'kind', value->>'owner', value->'payload', 'queued', \
         value->>'max_attempts', value->>'priority', value->>'run_at', value->>'parent_id', \
         value->>'idempotency_key', value->>'fair_seq', $2, $2 FROM json_each($1) WHERE true \
         ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING *",
    claim_many: "UPDATE jobs SET status = 'running', attempt = attempt + 1, worker_id = $2, \
         started_at = $3, updated_at = $3, progress = 0, progress_message = NULL \
         WHERE id IN (SELECT value FROM json_each($1)) AND +status IN ('queued', 'failed') \
         AND NOT cancel_requested RETURNING *",
    succeed_many: "UPDATE jobs SET status = 'succeeded', result = s.result, progress = 100, \
         finished_at = $2, updated_at = $2, last_error = NULL \
         FROM (SELECT value->>'id' AS id, value->'result' AS result FROM json_each($3)) AS s \
         WHERE jobs.id = s.id AND +jobs.worker_id = $1 AND +jobs.status = 'running' RETURNING jobs.id",
};

/// `->` keeps a JSON null payload or result JSON `null`, where `jsonb_to_recordset` would
/// make it SQL NULL. `id = ANY(ARRAY(…))` makes the ids an index condition: with `IN (SELECT
/// …)` the planner, whose statistics lag a fast-filling table, read every queued job.
pub(super) const POSTGRES_BATCH_SQL: BatchSql = BatchSql {
    insert_many: "INSERT INTO jobs (id, kind, owner, payload, status, max_attempts, priority, run_at, \
         parent_id, idempotency_key, fair_seq, created_at, updated_at) \
         SELECT r->>'id', r->>'kind', r->>'owner', r->'payload', 'queued', (r->>'max_attempts')::INTEGER, \
         (r->>'priority')::INTEGER, (r->>'run_at')::BIGINT, r->>'parent_id', r->>'idempotency_key', \
         (r->>'fair_seq')::BIGINT, $2, $2 \
         FROM jsonb_array_elements($1) AS r \
         ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING *",
    claim_many: "UPDATE jobs SET status = 'running', attempt = attempt + 1, worker_id = $2, \
         started_at = $3, updated_at = $3, progress = 0, progress_message = NULL \
         WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($1))) AND status IN ('queued', 'failed') \
         AND NOT cancel_requested RETURNING *",
    succeed_many: "UPDATE jobs SET status = 'succeeded', result = s.result, progress = 100, \
         finished_at = $2, updated_at = $2, last_error = NULL \
         FROM (SELECT r->>'id' AS id, r->'result' AS result FROM jsonb_array_elements($3) AS r) AS s \
         WHERE jobs.id = s.id AND jobs.worker_id = $1 AND jobs.status = 'running' RETURNING jobs.id",
};

pub(super) const BY_IDEMPOTENCY_KEY: &str = "SELECT * FROM jobs WHERE owner = $1 AND idempotency_key = $2";
pub(super) const GET: &str = "SELECT * FROM jobs WHERE id = $1";
pub(super) const LIST: &str = "SELECT * FROM jobs WHERE ($1 IS NULL OR owner = $1) AND ($2 IS NULL OR status = $2) \
     AND ($3 IS NULL OR kind = $3) AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5";
pub(super) const PROGRESS: &str = "UPDATE jobs SET progress = $2, progress_message = $3, updated_at = $4 \
     WHERE id = $1 AND status = 'running'";
pub(super) const FAIL_RETRY: &str = "UPDATE jobs SET status = 'failed', last_error = $3, run_at = $4, updated_at = $5, \
     worker_id = NULL WHERE id = $1 AND worker_id = $2 AND status = 'running'";
pub(super) const FAIL_DEAD: &str = "UPDATE jobs SET status = 'dead', last_error = $3, finished_at = $4, updated_at = $4 \
     WHERE id = $1 AND worker_id = $2 AND status = 'running'";
pub(super) const FINISH_CANCELLED: &str = "UPDATE jobs SET status = 'cancelled', finished_at = $3, updated_at = $3 \
     WHERE id = $1 AND worker_id = $2 AND status = 'running'";
pub(super) const CANCEL: &str = "UPDATE jobs SET \
     status = CASE WHEN status = 'running' THEN status ELSE 'cancelled' END, \
     finished_at = CASE WHEN status = 'running' THEN finished_at ELSE $2 END, \
     cancel_requested = TRUE, parked = FALSE, updated_at = $2 \
     WHERE id = $1 AND status IN ('queued', 'failed', 'running') RETURNING *";
pub(super) const RETRY: &str = "UPDATE jobs SET status = 'queued', run_at = $2, updated_at = $2, finished_at = NULL, \
     cancel_requested = FALSE, worker_id = NULL, \
     max_attempts = CASE WHEN max_attempts > attempt THEN max_attempts ELSE attempt + 1 END \
     WHERE id = $1 AND status IN ('failed', 'dead', 'cancelled') RETURNING *";
pub(super) const REQUEUE_WORKER: &str = "UPDATE jobs SET status = 'queued', worker_id = NULL, updated_at = $2, \
     redelivered_at = NULL, last_error = 'its worker stopped before the attempt finished' \
     WHERE worker_id = $1 AND status = 'running' RETURNING *";
/// Marks waiting jobs due before `$1` that were not re-delivered since they fell due, oldest
/// first. The outer conditions repeat the inner ones: a sweep that waited on another's row
/// locks re-checks them on the row it then sees (PostgreSQL), so each due time is taken once.
pub(super) const TAKE_FOR_REDELIVERY: &str = "UPDATE jobs SET redelivered_at = $2 WHERE id IN (\
     SELECT id FROM jobs WHERE status IN ('queued', 'failed') AND run_at <= $1 AND NOT cancel_requested \
     AND NOT parked AND (redelivered_at IS NULL OR redelivered_at < run_at) ORDER BY run_at LIMIT $3) \
     AND status IN ('queued', 'failed') AND NOT parked AND (redelivered_at IS NULL OR redelivered_at < run_at) \
     RETURNING *";
/// Per kind, when its longest-waiting due job fell due (parked jobs wait for their owner, not
/// for a delivery).
pub(super) const OLDEST_DUE: &str = "SELECT kind, MIN(run_at) FROM jobs WHERE status IN ('queued', 'failed') \
     AND run_at <= $1 AND NOT cancel_requested AND NOT parked GROUP BY kind";
pub(super) const INSERT_LOG: &str = "INSERT INTO job_logs (job_id, seq, at, level, line) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (job_id, seq) DO NOTHING";
pub(super) const LOGS: &str = "SELECT seq, at, level, line FROM job_logs WHERE job_id = $1 AND seq > $2 \
     ORDER BY seq LIMIT $3";
pub(super) const LAST_LOG_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM job_logs WHERE job_id = $1";
/// Counts per kind and status, with the last hour's and last minute's successes, in one
/// statement so the figures come from one snapshot (a job is never both running and done).
pub(super) const KIND_STATS: &str = "SELECT kind, status, COUNT(*), CAST(0 AS BIGINT) FROM jobs \
     WHERE status IN ('queued', 'running', 'failed', 'dead') GROUP BY kind, status \
     UNION ALL SELECT kind, 'succeeded', COUNT(*), SUM(CASE WHEN finished_at >= $1 THEN 1 ELSE 0 END) \
     FROM jobs WHERE status = 'succeeded' AND finished_at >= $2 GROUP BY kind";
