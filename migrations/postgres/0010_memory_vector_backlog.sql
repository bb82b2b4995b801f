-- Bulk inserts of memories leave their vectors outside the HNSW index (`vector_pending`), so
-- an import is not held to the rate at which HNSW takes inserts (hundreds a second); the
-- `index_memory_vectors` job moves them in, and until it has, semantic search scans an
-- owner's pending vectors exactly next to its index scan. The per-dimension HNSW indexes
-- now leave pending rows out: the old ones (0009's and any made at run time) are replaced;
-- the store creates the others again, under the new name, on first use.

ALTER TABLE memories ADD COLUMN vector_pending BOOLEAN NOT NULL DEFAULT false;

CREATE INDEX memories_vector_backlog ON memories (owner, seq) WHERE vector_pending;

DO $$
DECLARE
    old_index TEXT;
BEGIN
    FOR old_index IN
        SELECT indexname FROM pg_indexes
        WHERE schemaname = current_schema() AND tablename = 'memories' AND indexname LIKE 'memories\_embedding\_%'
    LOOP
        EXECUTE format('DROP INDEX %I', old_index);
    END LOOP;
END
$$;

CREATE INDEX memories_vectors_384 ON memories
    USING hnsw ((embedding::vector(384)) vector_cosine_ops)
    WHERE embedding_dims = 384 AND valid_to IS NULL AND NOT vector_pending;
