-- Claims and status listings look jobs up by (status, id): a claim names its ids, so the
-- index answers it with one probe per id and status, however many jobs are queued. The
-- (status, kind) index it replaces made the planner read every queued job for each claim.
DROP INDEX jobs_status_kind;
CREATE INDEX jobs_status_id_kind ON jobs (status, id, kind);
