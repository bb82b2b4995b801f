-- Federation (agmem coordinator): agents push summaries (topic counts, fact hashes), pulls
-- read the merge of every agent's latest summary. Each tenant (an org, or a user without
-- one) has a federation of its own. A push replaces its agent's earlier summary and updates
-- the merged tables by the difference, in one transaction; `seq` numbers a tenant's pushes,
-- and every merged row carries the seq that last changed it, so `GET /pull?since=<seq>`
-- reads only what changed. Merged rows that fall to zero stay as tombstones (agents = 0,
-- refcount = 0) so a later pull can report them removed. Times are ms since the Unix epoch.

-- One row per tenant: the seq of its latest accepted push (bumping it first serialises a
-- tenant's pushes) and how many topics and fact hashes its merge holds.
CREATE TABLE federation_tenants (
    tenant  TEXT    PRIMARY KEY,
    seq     BIGINT  NOT NULL,
    topics  BIGINT  NOT NULL,
    facts   BIGINT  NOT NULL
);

-- Each agent's latest summary (its topics and facts are in the two tables below).
CREATE TABLE federation_agents (
    tenant       TEXT    NOT NULL,
    agent_id     TEXT    NOT NULL,
    timestamp    BIGINT  NOT NULL,                -- the summary's own time
    metadata     TEXT    NOT NULL,                -- JSON object, as pushed
    received_at  BIGINT  NOT NULL,
    seq          BIGINT  NOT NULL,                -- the push that stored it
    topics       BIGINT  NOT NULL,
    facts        BIGINT  NOT NULL,
    PRIMARY KEY (tenant, agent_id)
);

CREATE TABLE federation_agent_topics (
    tenant    TEXT    NOT NULL,
    agent_id  TEXT    NOT NULL,
    topic     TEXT    NOT NULL,
    count     BIGINT  NOT NULL,
    PRIMARY KEY (tenant, agent_id, topic)
);

CREATE TABLE federation_agent_facts (
    tenant    TEXT    NOT NULL,
    agent_id  TEXT    NOT NULL,
    hash      TEXT    NOT NULL,                   -- lowercase hex
    PRIMARY KEY (tenant, agent_id, hash)
);

-- The merge: per topic the sum of the agents' counts and how many agents name it.
CREATE TABLE federation_topics (
    tenant       TEXT    NOT NULL,
    topic        TEXT    NOT NULL,
    total        BIGINT  NOT NULL,
    agents       BIGINT  NOT NULL,                -- 0: a tombstone
    changed_seq  BIGINT  NOT NULL,
    PRIMARY KEY (tenant, topic)
);
CREATE INDEX federation_topics_changed ON federation_topics (tenant, changed_seq);

-- The merge: per fact hash how many agents hold it. `changed_seq` moves only when the hash
-- appears or disappears.
CREATE TABLE federation_facts (
    tenant       TEXT    NOT NULL,
    hash         TEXT    NOT NULL,
    refcount     BIGINT  NOT NULL,                -- 0: a tombstone
    changed_seq  BIGINT  NOT NULL,
    PRIMARY KEY (tenant, hash)
);
CREATE INDEX federation_facts_changed ON federation_facts (tenant, changed_seq);
