-- Blob sync: every change to a namespace's index gets the namespace's next sequence number
-- (the `since` cursor), each path keeps its last versions, and writes in flight are recorded
-- so a crash between the blob store and the index is repaired by a sweep.
ALTER TABLE blob_index ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE blob_index ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE blob_index ADD COLUMN content_type TEXT;
CREATE INDEX blob_index_changes ON blob_index (namespace, seq);

-- One row per namespace: the last sequence number handed out, and the highest one of a
-- tombstone purged since (a `since` cursor below it cannot see that delete any more).
CREATE TABLE blob_namespaces (
    namespace   TEXT    PRIMARY KEY,
    seq         BIGINT  NOT NULL DEFAULT 0,
    purged_seq  BIGINT  NOT NULL DEFAULT 0
);

CREATE TABLE blob_versions (
    namespace     TEXT    NOT NULL,
    path          TEXT    NOT NULL,
    version       BIGINT  NOT NULL,
    md5           TEXT    NOT NULL,
    size          BIGINT  NOT NULL,
    content_type  TEXT,
    is_deleted    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT  NOT NULL,          -- ms since the Unix epoch
    PRIMARY KEY (namespace, path, version)
);

CREATE TABLE blob_pending (
    id          TEXT    PRIMARY KEY,
    namespace   TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    started_at  BIGINT  NOT NULL             -- ms since the Unix epoch
);
CREATE INDEX blob_pending_age ON blob_pending (started_at);
