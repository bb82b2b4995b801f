-- Agent evaluations (Memory-Break): a task evaluates agents on a PR or a scenario; each agent
-- it names has one run, with what the run recorded (milestones, stats, the probes' answers,
-- its artifacts' keys) and, once judged, its score or why it is unscored. JSON columns hold
-- text; times are milliseconds since the Unix epoch.

CREATE TABLE eval_tasks (
    id                 TEXT     PRIMARY KEY,
    owner              TEXT     NOT NULL,
    team_id            TEXT,
    org_id             TEXT,
    project_id         TEXT,
    created_by_email   TEXT,
    created_by_name    TEXT,
    pr_url             TEXT,
    repo               TEXT,
    pr_number          BIGINT,
    scenario_name      TEXT,
    scenario           TEXT,                 -- JSON: the scenario document
    agents             TEXT     NOT NULL,    -- JSON array of agent names
    rubric             TEXT     NOT NULL,    -- JSON array of dimension codes
    rubric_thresholds  TEXT     NOT NULL,    -- JSON object code -> threshold
    max_files          BIGINT   NOT NULL,
    status             TEXT     NOT NULL,
    changed_files      TEXT     NOT NULL,    -- JSON array of paths
    prompt_hash        TEXT,
    error_message      TEXT,
    job_id             TEXT,
    created_at         BIGINT   NOT NULL,
    updated_at         BIGINT   NOT NULL,
    started_at         BIGINT,
    completed_at       BIGINT
);

CREATE INDEX eval_tasks_by_owner ON eval_tasks (owner, created_at DESC, id DESC);
CREATE INDEX eval_tasks_by_team ON eval_tasks (team_id, created_at DESC, id DESC) WHERE team_id IS NOT NULL;
CREATE INDEX eval_tasks_by_created ON eval_tasks (created_at DESC, id DESC);

CREATE TABLE eval_runs (
    id               TEXT     PRIMARY KEY,
    task_id          TEXT     NOT NULL REFERENCES eval_tasks (id) ON DELETE CASCADE,
    position         BIGINT   NOT NULL,      -- the agent's place in the task's list
    agent            TEXT     NOT NULL,
    status           TEXT     NOT NULL,
    milestones       TEXT     NOT NULL,      -- JSON object
    artifacts        TEXT     NOT NULL,      -- JSON object name -> blob key
    stats            TEXT     NOT NULL,      -- JSON object
    qa               TEXT     NOT NULL,      -- JSON array of the probes' answers
    error_message    TEXT,
    retry_count      BIGINT   NOT NULL,
    job_id           TEXT,
    score            TEXT,                   -- JSON: the score and verdict, once scored
    overall_score    DOUBLE PRECISION,
    passed           BOOLEAN,
    unscored_reason  TEXT,
    judged_at        BIGINT,
    created_at       BIGINT   NOT NULL,
    updated_at       BIGINT   NOT NULL,
    started_at       BIGINT,
    completed_at     BIGINT,
    UNIQUE (task_id, agent)
);

CREATE INDEX eval_runs_judged ON eval_runs (judged_at) WHERE judged_at IS NOT NULL;
