-- How often search returned each live memory, kept apart from `memories`: counting a read
-- there rewrote the whole row (its vector too), and each new row version went into every
-- index of the table, the HNSW one included. A read count here is a small upsert. A memory's
-- `accessCount` is `memories.access_count` (what it was imported or superseded with) plus its
-- reads; when its row goes (update or delete), its reads go with it: an update folds them
-- into the row it writes.

CREATE TABLE memory_reads (
    owner  TEXT    NOT NULL,
    id     TEXT    NOT NULL,
    reads  BIGINT  NOT NULL,
    PRIMARY KEY (owner, id)
);

CREATE FUNCTION memories_forget_reads() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM memory_reads WHERE owner = OLD.owner AND id = OLD.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER memories_forget_reads AFTER DELETE ON memories
    FOR EACH ROW EXECUTE FUNCTION memories_forget_reads();
