-- Fair delivery between owners. A worker given a kind's delivery claims that kind's next due
-- job in turn: highest priority first, then lowest `fair_seq`. A job's `fair_seq` is one past
-- its owner's last waiting job of the kind and priority, and no less than the job at the head
-- of that queue, so owners with work waiting take turns however much each queued.
-- `parked` marks a due job passed over while its owner ran as many jobs as
-- ENGRAM_JOBS_MAX_RUNNING_PER_OWNER allows: out of turn (and of the claim index) until the owner
-- has room, when it runs in the slot the owner's last attempt left, or is delivered again.
ALTER TABLE jobs ADD COLUMN fair_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN parked BOOLEAN NOT NULL DEFAULT FALSE;

CREATE INDEX jobs_waiting_in_turn ON jobs (kind, priority DESC, fair_seq, id) WHERE status IN ('queued', 'failed') AND NOT parked;
CREATE INDEX jobs_waiting_by_owner ON jobs (owner, kind, priority, fair_seq) WHERE status IN ('queued', 'failed');
CREATE INDEX jobs_parked ON jobs (owner) WHERE parked;
