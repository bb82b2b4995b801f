//! [`MemoryStore`] on SQLite: tags as a JSON array, vectors as little-endian f32 blobs
//! searched exactly through the in-memory [`VectorCache`], keyword search through FTS5 with
//! BM25 ranking. Writes run in `BEGIN IMMEDIATE` transactions, so the owner's sequence
//! number is taken with the database's write lock held.

use std::collections::{HashMap, HashSet};

use sqlx::{FromRow, QueryBuilder, Sqlite, SqliteConnection, SqlitePool};

use super::query::content_key;
use super::shared::{RowColumns, corrupt, memory_columns, select_memories};
use super::store::MemorySql;
use super::vectors::{self, VectorCache};
use super::{BacklogSpan, Memory, MemoryFilter, ScoredMemory};
use crate::error::StoreResult;
use crate::sql::millis::to_millis;

/// Vectors the search cache holds at most across owners (about 1 GiB of f32s).
const VECTOR_CACHE_FLOATS: usize = 256 * 1024 * 1024;

/// Lists are read with `json_each`.
pub(super) const SQL: MemorySql = MemorySql {
    begin_write: "BEGIN IMMEDIATE",
    snapshot: None,
    taken_ids: "SELECT id FROM memories WHERE owner = $1 AND id IN (SELECT value FROM json_each($2))",
    clear_tombstones: "DELETE FROM memory_tombstones WHERE owner = $1 AND id IN (SELECT value FROM json_each($2))",
    record_access: "INSERT INTO memory_reads (owner, id, reads) SELECT m.owner, m.id, 1 FROM memories m \
         WHERE m.valid_to IS NULL AND m.owner = $1 AND m.id IN (SELECT value FROM json_each($2)) \
         ON CONFLICT (owner, id) DO UPDATE SET reads = memory_reads.reads + 1",
    existing_contents: "SELECT DISTINCT content_key FROM memories WHERE valid_to IS NULL AND owner = $1 \
         AND content_key IN (SELECT value FROM json_each($2))",
};

const ROWS_BY_ID: &str =
    select_memories!("NULL", "WHERE m.owner = $1 AND m.id IN (SELECT value FROM json_each($2))");

pub struct SqliteMemories {
    pub(super) pool: SqlitePool,
    vectors: VectorCache,
}

impl SqliteMemories {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool, vectors: VectorCache::new(VECTOR_CACHE_FLOATS) }
    }

    /// Brings the owner's cached matrix for `dims` up to the owner's current sequence.
    async fn refreshed_vectors(
        &self,
        owner: &str,
        dims: usize,
    ) -> StoreResult<std::sync::Arc<std::sync::RwLock<vectors::OwnerVectors>>> {
        let current: i64 = sqlx::query_scalar("SELECT seq FROM memory_owners WHERE owner = $1")
            .bind(owner)
            .fetch_optional(&self.pool)
            .await?
            .unwrap_or(0);
        let matrix = self.vectors.owner(owner, dims);
        let cached = vectors::read(&matrix).seq;
        if cached == Some(current) {
            return Ok(matrix);
        }
        // Rows are read after `current`, so they reflect at least that sequence; applying a
        // change twice is harmless.
        let since = cached.unwrap_or(i64::MIN);
        let rows: Vec<(String, Option<Vec<u8>>, Option<i64>)> = sqlx::query_as(
            "SELECT id, embedding, valid_to FROM memories WHERE owner = $1 AND seq > $2 AND embedding_dims = $3 \
             AND (valid_to IS NULL OR $4)",
        )
        .bind(owner)
        .bind(since)
        .bind(dims as i64)
        .bind(cached.is_some())
        .fetch_all(&self.pool)
        .await?;
        let deleted: Vec<String> = match cached {
            None => Vec::new(),
            Some(since) => {
                let mut ids: Vec<String> =
                    sqlx::query_scalar("SELECT id FROM memory_tombstones WHERE owner = $1 AND seq > $2")
                        .bind(owner)
                        .bind(since)
                        .fetch_all(&self.pool)
                        .await?;
                // Rows whose vector was cleared or changed dimension since.
                ids.extend(
                    sqlx::query_scalar::<_, String>(
                        "SELECT id FROM memories WHERE owner = $1 AND seq > $2 \
                         AND (embedding_dims IS NULL OR embedding_dims <> $3)",
                    )
                    .bind(owner)
                    .bind(since)
                    .bind(dims as i64)
                    .fetch_all(&self.pool)
                    .await?,
                );
                ids
            }
        };
        let floats = {
            let mut matrix = vectors::write(&matrix);
            if matrix.seq.is_none_or(|seq| seq < current) {
                for id in &deleted {
                    matrix.remove(id);
                }
                for (id, blob, valid_to) in rows {
                    match (blob, valid_to) {
                        (Some(blob), None) => matrix.upsert(&id, &vectors::from_blob(&blob)),
                        _ => matrix.remove(&id),
                    }
                }
                matrix.seq = Some(current);
            }
            matrix.len() * dims
        };
        self.vectors.account(owner, dims, floats);
        Ok(matrix)
    }

    async fn rows_by_id(&self, owner: &str, ids: &[String]) -> StoreResult<HashMap<String, Memory>> {
        let rows: Vec<MemoryRow> =
            sqlx::query_as(ROWS_BY_ID).bind(owner).bind(sqlx::types::Json(ids)).fetch_all(&self.pool).await?;
        rows.into_iter().map(|row| row.into_memory().map(|m| (m.id.clone(), m))).collect()
    }

    /// A filter's tag conditions on the alias `m`.
    pub(super) fn push_tags(query: &mut QueryBuilder<Sqlite>, filter: &MemoryFilter) {
        for tag in &filter.tags_all {
            query
                .push(" AND EXISTS (SELECT 1 FROM json_each(m.tags) WHERE json_each.value = ")
                .push_bind(tag.clone())
                .push(")");
        }
        if !filter.tags_any.is_empty() {
            query.push(" AND EXISTS (SELECT 1 FROM json_each(m.tags) WHERE json_each.value IN (");
            let mut list = query.separated(", ");
            for tag in &filter.tags_any {
                list.push_bind(tag.clone());
            }
            query.push("))");
        }
    }

    /// Writes each row in turn (SQLite has no vector index, so no backlog either).
    pub(super) async fn insert_rows(
        conn: &mut SqliteConnection,
        memories: &[Memory],
        _to_backlog: bool,
    ) -> StoreResult<()> {
        for memory in memories {
            insert_row(conn, memory).await?;
        }
        Ok(())
    }

    /// Exact cosine search over the owner's cached matrix, restricted to what `filter` allows.
    pub(super) async fn nearest(
        &self,
        owner: &str,
        vector: &[f32],
        filter: &MemoryFilter,
        limit: i64,
    ) -> StoreResult<Vec<ScoredMemory>> {
        let allowed: Option<HashSet<String>> = if filter_is_empty(filter) {
            None
        } else {
            let mut query = QueryBuilder::<Sqlite>::new(
                "SELECT m.id FROM memories m WHERE m.valid_to IS NULL AND m.owner = ",
            );
            query.push_bind(owner.to_string());
            Self::push_filter(&mut query, filter);
            Some(query.build_query_scalar::<String>().fetch_all(&self.pool).await?.into_iter().collect())
        };
        let matrix = self.refreshed_vectors(owner, vector.len()).await?;
        let top = vectors::read(&matrix).top(vector, allowed.as_ref(), usize::try_from(limit).unwrap_or(0));
        let ids: Vec<String> = top.iter().map(|(id, _)| id.clone()).collect();
        let mut rows = self.rows_by_id(owner, &ids).await?;
        Ok(top
            .into_iter()
            .filter_map(|(id, score)| {
                let memory = rows.remove(&id).filter(|m| m.valid_to.is_none())?;
                Some(ScoredMemory { memory, score: f64::from(score) })
            })
            .collect())
    }

    /// FTS5 matches of any of `terms`, best first by BM25.
    pub(super) async fn best_matches(
        &self,
        owner: &str,
        terms: &[String],
        filter: &MemoryFilter,
        limit: i64,
    ) -> StoreResult<Vec<ScoredMemory>> {
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        // Each term quoted: FTS5 reads it as a plain token, never as query syntax.
        let fts_query =
            terms.iter().map(|t| format!("\"{}\"", t.replace('"', "\"\""))).collect::<Vec<_>>().join(" OR ");
        // CROSS JOIN keeps the full-text match as the outer loop. Left to choose, SQLite may
        // walk the owner's rows and run the match once per row: 0.35 s at 10,000 memories.
        let mut query = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            memory_columns!(),
            ", NULL AS embedding, -bm25(memories_fts) AS score FROM memories_fts \
             CROSS JOIN memories m ON m.rowid = memories_fts.rowid WHERE memories_fts MATCH "
        ));
        query
            .push_bind(fts_query)
            .push(" AND m.valid_to IS NULL AND m.owner = ")
            .push_bind(owner.to_string());
        Self::push_filter(&mut query, filter);
        query.push(" ORDER BY bm25(memories_fts) LIMIT ").push_bind(limit);
        let rows = query.build_query_as::<ScoredRow>().fetch_all(&self.pool).await?;
        rows.into_iter().map(|r| Ok(ScoredMemory { score: r.score, memory: r.row.into_memory()? })).collect()
    }

    /// Searches are exact: no vector ever waits for an index.
    pub(super) async fn drain_backlog(&self, _owner: Option<&str>, _limit: i64) -> StoreResult<Option<u64>> {
        Ok(Some(0))
    }

    pub(super) async fn pending_vectors(&self, _owner: &str) -> StoreResult<i64> {
        Ok(0)
    }

    pub(super) async fn pending_span(&self, _owner: &str) -> StoreResult<Option<BacklogSpan>> {
        Ok(None)
    }
}

fn filter_is_empty(filter: &MemoryFilter) -> bool {
    filter == &MemoryFilter::default()
}

#[derive(FromRow)]
pub(super) struct MemoryRow {
    #[sqlx(flatten)]
    columns: RowColumns,
    tags: String,
    provenance: Option<String>,
    embedding: Option<Vec<u8>>,
}

impl MemoryRow {
    pub(super) fn into_memory(self) -> StoreResult<Memory> {
        let id = &self.columns.id;
        let tags = serde_json::from_str(&self.tags).map_err(|e| corrupt(format!("memory {id} tags: {e}")))?;
        let provenance = self
            .provenance
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(format!("memory {id} provenance: {e}")))?;
        self.columns.into_memory(tags, provenance, self.embedding.as_deref().map(vectors::from_blob))
    }
}

#[derive(FromRow)]
struct ScoredRow {
    #[sqlx(flatten)]
    row: MemoryRow,
    score: f64,
}

const INSERT: &str = "INSERT INTO memories (owner, id, content, content_key, memory_type, scope, source_url, \
     source_platform, source_timestamp, source_conversation_id, confidence, access_count, tags, created_at, \
     updated_at, valid_from, valid_to, superseded_by, provenance, seq, embedding, embedding_dims) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)";

async fn insert_row(conn: &mut SqliteConnection, memory: &Memory) -> StoreResult<()> {
    let provenance = memory.provenance.as_ref().map(|p| p.to_string());
    sqlx::query(INSERT)
        .bind(&memory.owner)
        .bind(&memory.id)
        .bind(&memory.content)
        .bind(content_key(&memory.content))
        .bind(memory.memory_type.as_str())
        .bind(memory.scope.as_str())
        .bind(&memory.source_url)
        .bind(&memory.source_platform)
        .bind(memory.source_timestamp.map(to_millis))
        .bind(&memory.source_conversation_id)
        .bind(memory.confidence)
        .bind(memory.access_count)
        .bind(serde_json::to_string(&memory.tags).unwrap_or_else(|_| "[]".into()))
        .bind(to_millis(memory.created_at))
        .bind(to_millis(memory.updated_at))
        .bind(to_millis(memory.valid_from))
        .bind(memory.valid_to.map(to_millis))
        .bind(&memory.superseded_by)
        .bind(provenance)
        .bind(memory.seq)
        .bind(memory.embedding.as_deref().map(vectors::to_blob))
        .bind(memory.embedding.as_ref().map(|v| v.len() as i64))
        .execute(&mut *conn)
        .await?;
    Ok(())
}
