-- Semantic memories (AIBrain): each user's memories with their embeddings. A memory whose
-- content changes keeps its id; the old content stays as a history row (`valid_to` set,
-- `superseded_by` naming the memory that carries on). Deletes leave a tombstone. Every
-- change takes the owner's next `seq` (bumping `memory_owners.seq` serialises an owner's
-- writes), which sync cursors follow. Times are ms since the Unix epoch.

CREATE TABLE memory_owners (
    owner  TEXT    PRIMARY KEY,
    seq    BIGINT  NOT NULL
);

CREATE TABLE memories (
    owner                   TEXT              NOT NULL,
    id                      TEXT              NOT NULL,
    content                 TEXT              NOT NULL,
    content_key             TEXT              NOT NULL,   -- sha-256 of the normalised content
    memory_type             TEXT              NOT NULL,
    scope                   TEXT              NOT NULL,
    source_url              TEXT,
    source_platform         TEXT,
    source_timestamp        BIGINT,
    source_conversation_id  TEXT,
    confidence              DOUBLE PRECISION,
    access_count            BIGINT            NOT NULL DEFAULT 0,
    tags                    TEXT              NOT NULL,   -- JSON array of strings
    created_at              BIGINT            NOT NULL,
    updated_at              BIGINT            NOT NULL,
    valid_from              BIGINT            NOT NULL,
    valid_to                BIGINT,
    superseded_by           TEXT,
    provenance              TEXT,                         -- JSON object
    seq                     BIGINT            NOT NULL,
    embedding               BLOB,                         -- little-endian f32s
    embedding_dims          INTEGER,
    PRIMARY KEY (owner, id)
);

CREATE INDEX memories_live_by_created ON memories (owner, created_at DESC, id DESC) WHERE valid_to IS NULL;
CREATE INDEX memories_by_seq ON memories (owner, seq);
CREATE INDEX memories_history ON memories (owner, superseded_by) WHERE superseded_by IS NOT NULL;
CREATE INDEX memories_live_content ON memories (owner, content_key) WHERE valid_to IS NULL;

CREATE TABLE memory_tombstones (
    owner       TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    seq         BIGINT  NOT NULL,
    deleted_at  BIGINT  NOT NULL,
    PRIMARY KEY (owner, id)
);

CREATE INDEX memory_tombstones_by_seq ON memory_tombstones (owner, seq);

-- Keyword search: FTS5 over the content (Porter stemming), kept in step by triggers.
CREATE VIRTUAL TABLE memories_fts USING fts5(
    content,
    content = 'memories',
    content_rowid = 'rowid',
    tokenize = 'porter unicode61 remove_diacritics 2'
);

CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, content) VALUES (new.rowid, new.content);
END;

CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
END;

CREATE TRIGGER memories_fts_update AFTER UPDATE OF content ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
    INSERT INTO memories_fts (rowid, content) VALUES (new.rowid, new.content);
END;
