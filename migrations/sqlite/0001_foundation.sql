-- Versioned key/value entries: small shared state (settings, leases, cursors) that several
-- processes update with optimistic concurrency. `version` grows by one on every write.
CREATE TABLE kv_entries (
    namespace  TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    value      TEXT    NOT NULL,          -- JSON
    version    INTEGER NOT NULL,
    updated_at TEXT    NOT NULL,          -- RFC 3339, UTC
    PRIMARY KEY (namespace, key)
);
