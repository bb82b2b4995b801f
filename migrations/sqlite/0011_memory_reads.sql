-- How often search returned each live memory, kept apart from `memories` (as on PostgreSQL,
-- where counting a read in the row rewrote it and its vector into every index). A memory's
-- `accessCount` is `memories.access_count` (what it was imported or superseded with) plus its
-- reads; when its row goes (update or delete), its reads go with it: an update folds them
-- into the row it writes.

CREATE TABLE memory_reads (
    owner  TEXT     NOT NULL,
    id     TEXT     NOT NULL,
    reads  INTEGER  NOT NULL,
    PRIMARY KEY (owner, id)
) WITHOUT ROWID;

CREATE TRIGGER memories_forget_reads AFTER DELETE ON memories BEGIN
    DELETE FROM memory_reads WHERE owner = old.owner AND id = old.id;
END;
