-- pgvector serves semantic search; hstore is required by apalis-postgres (the job queue).
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS hstore;

-- Versioned key/value entries: small shared state (settings, leases, cursors) that several
-- processes update with optimistic concurrency. `version` grows by one on every write.
CREATE TABLE kv_entries (
    namespace  TEXT        NOT NULL,
    key        TEXT        NOT NULL,
    value      JSONB       NOT NULL,
    version    BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (namespace, key)
);
