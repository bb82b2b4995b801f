//! The SQL that puts jobs in turn: the `fair_seq` a new job gets, the claim of a kind's next
//! due jobs (with and without the per-owner running cap), and parking of jobs whose delivery
//! the cap used up. Start-time fair queuing: a new job's `fair_seq` is one past its owner's
//! last waiting job of the kind and priority, and no less than the job at the head of that
//! queue, so an owner who queued 5,000 jobs holds `fair_seq`s far ahead while a newcomer's
//! job lands right behind the head, and owners with work waiting alternate.

/// The statements that differ between the two databases.
pub(super) struct TurnSql {
    /// How a claim's (and a batch insert's) transaction begins: SQLite takes the write lock
    /// at once, so the read and the write see the same state.
    pub begin: &'static str,
    /// Run first in a claim's transaction (PostgreSQL): claims of a kind queue behind each
    /// other instead of both choosing the same jobs and one coming back with fewer.
    pub lock: Option<&'static str>,
    /// `$1` owner, `$2` kind, `$3` priority, `$4` now: the `fair_seq` of the owner's next job
    /// of that kind and priority.
    pub base_seq: &'static str,
    /// `$1` the JSON array of job ids to park.
    pub park: &'static str,
    /// `$1` owner, `$2` how many of its jobs may run at once: unparks as many as it has room
    /// for.
    pub unpark: &'static str,
    /// Owners with parked jobs.
    pub parked_owners: &'static str,
    /// `$1` owner, `$2` worker, `$3` now, `$4` the JSON array of kinds, `$5` how many of the
    /// owner's jobs may run at once: claims the owner's next parked job of those kinds if it
    /// has room.
    pub claim_parked: &'static str,
}

pub(super) const SQLITE_TURN_SQL: TurnSql = TurnSql {
    begin: "BEGIN IMMEDIATE",
    lock: None,
    base_seq: "SELECT MAX( \
         COALESCE((SELECT MAX(fair_seq) FROM jobs WHERE owner = $1 AND kind = $2 AND priority = $3 \
             AND status IN ('queued', 'failed')), 0) + 1, \
         COALESCE((SELECT fair_seq FROM jobs WHERE kind = $2 AND priority = $3 \
             AND status IN ('queued', 'failed') AND NOT parked AND run_at <= $4 ORDER BY fair_seq, id LIMIT 1), 0))",
    park: "UPDATE jobs SET parked = TRUE WHERE id IN (SELECT value FROM json_each($1))",
    unpark: "UPDATE jobs SET parked = FALSE WHERE id IN (SELECT id FROM jobs \
         WHERE owner = $1 AND parked AND status IN ('queued', 'failed') ORDER BY priority DESC, fair_seq, id \
         LIMIT MAX(0, $2 - (SELECT COUNT(*) FROM jobs WHERE owner = $1 AND status = 'running'))) RETURNING *",
    // The unary `+` leaves the status index alone, so SQLite reads the small parked index.
    parked_owners: "SELECT DISTINCT owner FROM jobs WHERE parked AND +status IN ('queued', 'failed')",
    claim_parked: "UPDATE jobs SET status = 'running', attempt = attempt + 1, worker_id = $2, \
         started_at = $3, updated_at = $3, progress = 0, progress_message = NULL, parked = FALSE \
         WHERE id IN (SELECT id FROM jobs WHERE owner = $1 AND parked AND +status IN ('queued', 'failed') \
         AND kind IN (SELECT value FROM json_each($4)) AND run_at <= $3 AND NOT cancel_requested \
         ORDER BY priority DESC, fair_seq, id \
         LIMIT MIN(1, MAX(0, $5 - (SELECT COUNT(*) FROM jobs WHERE owner = $1 AND status = 'running')))) \
         RETURNING *",
};

pub(super) const POSTGRES_TURN_SQL: TurnSql = TurnSql {
    begin: "BEGIN",
    lock: Some("SELECT pg_advisory_xact_lock(hashtext('engram:claim:' || $1))"),
    base_seq: "SELECT GREATEST( \
         COALESCE((SELECT MAX(fair_seq) FROM jobs WHERE owner = $1 AND kind = $2 AND priority = $3 \
             AND status IN ('queued', 'failed')), 0) + 1, \
         COALESCE((SELECT fair_seq FROM jobs WHERE kind = $2 AND priority = $3 \
             AND status IN ('queued', 'failed') AND NOT parked AND run_at <= $4 ORDER BY fair_seq, id LIMIT 1), 0))",
    park: "UPDATE jobs SET parked = TRUE WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($1)))",
    unpark: "UPDATE jobs SET parked = FALSE WHERE id IN (SELECT id FROM jobs \
         WHERE owner = $1 AND parked AND status IN ('queued', 'failed') ORDER BY priority DESC, fair_seq, id \
         LIMIT GREATEST(0, $2 - (SELECT COUNT(*) FROM jobs WHERE owner = $1 AND status = 'running'))) RETURNING *",
    parked_owners: "SELECT DISTINCT owner FROM jobs WHERE parked AND status IN ('queued', 'failed')",
    claim_parked: "UPDATE jobs SET status = 'running', attempt = attempt + 1, worker_id = $2, \
         started_at = $3, updated_at = $3, progress = 0, progress_message = NULL, parked = FALSE \
         WHERE id IN (SELECT id FROM jobs WHERE owner = $1 AND parked AND status IN ('queued', 'failed') \
         AND kind = ANY(ARRAY(SELECT jsonb_array_elements_text($4))) AND run_at <= $3 AND NOT cancel_requested \
         ORDER BY priority DESC, fair_seq, id \
         LIMIT LEAST(1, GREATEST(0, $5 - (SELECT COUNT(*) FROM jobs WHERE owner = $1 AND status = 'running')))) \
         RETURNING *",
};

/// `$1` kind, `$2` now: a due job of the kind that is not parked, if any.
pub(super) const ANY_DUE: &str = "SELECT id FROM jobs WHERE kind = $1 AND status IN ('queued', 'failed') \
     AND run_at <= $2 AND NOT cancel_requested AND NOT parked LIMIT 1";

/// `$1` kind, `$2` now, `$3` how many: the kind's next due jobs in turn.
pub(super) const IN_TURN: &str = "SELECT id FROM jobs WHERE kind = $1 AND status IN ('queued', 'failed') \
     AND run_at <= $2 AND NOT cancel_requested AND NOT parked ORDER BY priority DESC, fair_seq, id LIMIT $3";

/// `$1` kind, `$2` now, `$3` how many to look at, `$4` the running cap, `$5` the owner the cap
/// does not apply to: the kind's next due jobs in turn, each saying whether its owner's
/// running jobs plus its jobs ahead of it in this list reach the cap.
pub(super) const IN_TURN_CAPPED: &str = "WITH running AS ( \
         SELECT owner, COUNT(*) AS n FROM jobs WHERE status = 'running' GROUP BY owner \
     ), candidates AS ( \
         SELECT id, owner, priority, fair_seq FROM jobs WHERE kind = $1 AND status IN ('queued', 'failed') \
         AND run_at <= $2 AND NOT cancel_requested AND NOT parked ORDER BY priority DESC, fair_seq, id LIMIT $3 \
     ) \
     SELECT c.id, c.owner <> $5 AND ROW_NUMBER() OVER ( \
         PARTITION BY c.owner ORDER BY c.priority DESC, c.fair_seq, c.id) + COALESCE(r.n, 0) > $4 AS over_cap \
     FROM candidates c LEFT JOIN running r ON r.owner = c.owner ORDER BY c.priority DESC, c.fair_seq, c.id";

pub(super) const WAITING_COUNT: &str =
    "SELECT COUNT(*) FROM jobs WHERE owner = $1 AND status IN ('queued', 'failed')";

/// How far past the jobs it wants a capped claim looks for owners with room.
pub(super) const CAPPED_LOOKAHEAD: usize = 256;

/// Which of the candidates (in turn, each saying whether its owner is at the cap) a claim of
/// `count` takes, and which it parks: every capped one it saw. A parked job leaves the claim
/// index, so the deliveries still queued for an owner at the cap cost an empty look each
/// instead of a scan past its backlog; parked jobs run when their owner has room.
pub(super) fn take_and_park(candidates: Vec<(String, bool)>, count: usize) -> (Vec<String>, Vec<String>) {
    let (capped, free): (Vec<_>, Vec<_>) = candidates.into_iter().partition(|(_, over_cap)| *over_cap);
    let take = free.into_iter().take(count).map(|(id, _)| id).collect();
    (take, capped.into_iter().map(|(id, _)| id).collect())
}

#[cfg(test)]
mod tests {
    use super::take_and_park;

    #[test]
    fn a_claim_takes_jobs_with_room_and_parks_every_capped_one() {
        let candidates = |list: &[(&str, bool)]| list.iter().map(|(id, c)| (id.to_string(), *c)).collect();
        let list = [("a1", true), ("b1", false), ("a2", true), ("b2", false)];
        let parked = vec!["a1".to_string(), "a2".to_string()];
        assert_eq!(take_and_park(candidates(&list), 1), (vec!["b1".into()], parked.clone()));
        assert_eq!(take_and_park(candidates(&list), 3), (vec!["b1".into(), "b2".into()], parked));
        assert_eq!(take_and_park(candidates(&[]), 2), (vec![], vec![]));
    }
}
