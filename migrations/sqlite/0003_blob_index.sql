-- The sync index of blob namespaces: one row per path, kept in step with the blob store.
-- A deleted path stays as a tombstone (is_deleted) until `tombstone_gc` purges it.
CREATE TABLE blob_index (
    namespace      TEXT    NOT NULL,
    path           TEXT    NOT NULL,
    md5            TEXT    NOT NULL,
    size           INTEGER NOT NULL,
    last_modified  INTEGER NOT NULL,          -- ms since the Unix epoch
    is_deleted     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, path)
);
CREATE INDEX blob_index_tombstones ON blob_index (last_modified) WHERE is_deleted;
