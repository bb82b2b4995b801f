//! [`MemoryStore`] on SQLite: tags as a JSON array, vectors as little-endian f32 blobs
//! searched exactly through the in-memory [`VectorCache`], keyword search through FTS5 with
//! BM25 ranking. Writes run in `BEGIN IMMEDIATE` transactions, so the owner's sequence
//! number is taken with the database's write lock held.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::Utc;
use sqlx::{FromRow, QueryBuilder, Sqlite, SqliteConnection, SqlitePool};

use super::query::content_key;
use super::shared::{
    COLUMNS, NEXT_SEQS, RowColumns, UPSERT_TOMBSTONE, apply_patch, change_list, changed_after, corrupt,
    materialise, page_of,
};
use super::vectors::{self, VectorCache};
use super::{
    BacklogSpan, ChangePage, ChangesFrom, Deleted, Inserted, ListFrom, Memory, MemoryFilter, MemoryPatch,
    MemoryStore, NewMemory, ScoredMemory,
};
use crate::error::StoreResult;
use crate::sql::millis::to_millis;

/// Vectors the search cache holds at most across owners (about 1 GiB of f32s).
const VECTOR_CACHE_FLOATS: usize = 256 * 1024 * 1024;

/// Ids bound in one `IN (...)` list.
const ID_CHUNK: usize = 500;

pub struct SqliteMemories {
    pool: SqlitePool,
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
        let mut found = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(ID_CHUNK) {
            let mut query = QueryBuilder::<Sqlite>::new(format!(
                "SELECT {COLUMNS}, NULL AS embedding FROM memories m WHERE m.owner = "
            ));
            query.push_bind(owner.to_string()).push(" AND m.id IN (");
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(id.clone());
            }
            query.push(")");
            for row in query.build_query_as::<MemoryRow>().fetch_all(&self.pool).await? {
                let memory = row.into_memory()?;
                found.insert(memory.id.clone(), memory);
            }
        }
        Ok(found)
    }

    async fn live_row(conn: &mut SqliteConnection, owner: &str, id: &str) -> StoreResult<Option<Memory>> {
        let row: Option<MemoryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS}, m.embedding FROM memories m WHERE m.owner = $1 AND m.id = $2 AND m.valid_to IS NULL"
        )))
        .bind(owner)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        row.map(MemoryRow::into_memory).transpose()
    }

    async fn next_seqs(conn: &mut SqliteConnection, owner: &str, count: i64) -> StoreResult<i64> {
        // The returned value is the last of `count` fresh numbers.
        Ok(sqlx::query_scalar(NEXT_SEQS).bind(owner).bind(count).fetch_one(&mut *conn).await?)
    }
}

/// Appends `AND ...` conditions for `filter` on the alias `m`.
fn push_filter(query: &mut QueryBuilder<Sqlite>, filter: &MemoryFilter) {
    if let Some(memory_type) = filter.memory_type {
        query.push(" AND m.memory_type = ").push_bind(memory_type.as_str());
    }
    if let Some(scope) = filter.scope {
        query.push(" AND m.scope = ").push_bind(scope.as_str());
    }
    if let Some(platform) = &filter.platform {
        query.push(" AND m.source_platform = ").push_bind(platform.clone());
    }
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
    if let Some(start) = filter.start {
        query.push(" AND m.created_at >= ").push_bind(to_millis(start));
    }
    if let Some(end) = filter.end {
        query.push(" AND m.created_at <= ").push_bind(to_millis(end));
    }
}

fn filter_is_empty(filter: &MemoryFilter) -> bool {
    filter == &MemoryFilter::default()
}

#[derive(FromRow)]
struct MemoryRow {
    #[sqlx(flatten)]
    columns: RowColumns,
    tags: String,
    provenance: Option<String>,
    embedding: Option<Vec<u8>>,
}

impl MemoryRow {
    fn into_memory(self) -> StoreResult<Memory> {
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

#[async_trait]
impl MemoryStore for SqliteMemories {
    async fn insert(&self, owner: &str, memories: Vec<NewMemory>) -> StoreResult<Vec<Inserted>> {
        if memories.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let count = memories.len() as i64;
        let last = Self::next_seqs(&mut tx, owner, count).await?;
        let now = Utc::now();
        let mut outcomes = Vec::with_capacity(memories.len());
        for (offset, new) in memories.into_iter().enumerate() {
            if let Some(id) = &new.id {
                let exists: Option<i64> =
                    sqlx::query_scalar("SELECT 1 FROM memories WHERE owner = $1 AND id = $2")
                        .bind(owner)
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if exists.is_some() {
                    outcomes.push(Inserted::ExistingId(id.clone()));
                    continue;
                }
            }
            let memory = materialise(owner, new, last - count + 1 + offset as i64, now);
            insert_row(&mut tx, &memory).await?;
            sqlx::query("DELETE FROM memory_tombstones WHERE owner = $1 AND id = $2")
                .bind(owner)
                .bind(&memory.id)
                .execute(&mut *tx)
                .await?;
            outcomes.push(Inserted::Created(Box::new(memory)));
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn get(&self, owner: &str, id: &str, with_vector: bool) -> StoreResult<Option<Memory>> {
        let vector = if with_vector { "m.embedding" } else { "NULL AS embedding" };
        let row: Option<MemoryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS}, {vector} FROM memories m WHERE m.owner = $1 AND m.id = $2"
        )))
        .bind(owner)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(MemoryRow::into_memory).transpose()
    }

    async fn update(&self, owner: &str, id: &str, patch: MemoryPatch) -> StoreResult<Option<Memory>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some(current) = Self::live_row(&mut tx, owner, id).await? else {
            return Ok(None);
        };
        if !patch.changes(&current) {
            return Ok(Some(Memory { embedding: None, ..current }));
        }
        let seq = Self::next_seqs(&mut tx, owner, 1).await?;
        let (next, history) = apply_patch(&current, patch, seq, Utc::now());
        if let Some(history) = &history {
            insert_row(&mut tx, history).await?;
        }
        sqlx::query("DELETE FROM memories WHERE owner = $1 AND id = $2")
            .bind(owner)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        insert_row(&mut tx, &next).await?;
        tx.commit().await?;
        Ok(Some(Memory { embedding: None, ..next }))
    }

    async fn delete(&self, owner: &str, id: &str) -> StoreResult<Option<Deleted>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if Self::live_row(&mut tx, owner, id).await?.is_none() {
            return Ok(None);
        }
        let seq = Self::next_seqs(&mut tx, owner, 1).await?;
        let now = Utc::now();
        sqlx::query("DELETE FROM memories WHERE owner = $1 AND (id = $2 OR superseded_by = $2)")
            .bind(owner)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(UPSERT_TOMBSTONE)
            .bind(owner)
            .bind(id)
            .bind(seq)
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Deleted { id: id.to_string(), seq, deleted_at: now }))
    }

    async fn list(
        &self,
        owner: &str,
        filter: &MemoryFilter,
        from: &ListFrom,
        limit: i64,
    ) -> StoreResult<Vec<Memory>> {
        let mut query = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {COLUMNS}, NULL AS embedding FROM memories m WHERE m.valid_to IS NULL AND m.owner = "
        ));
        query.push_bind(owner.to_string());
        push_filter(&mut query, filter);
        if let ListFrom::After { created_at, id } = from {
            let at = to_millis(*created_at);
            query.push(" AND (m.created_at < ").push_bind(at).push(" OR (m.created_at = ").push_bind(at);
            query.push(" AND m.id < ").push_bind(id.clone()).push("))");
        }
        query.push(" ORDER BY m.created_at DESC, m.id DESC LIMIT ").push_bind(limit);
        if let ListFrom::Offset(offset) = from {
            query.push(" OFFSET ").push_bind(*offset);
        }
        let rows = query.build_query_as::<MemoryRow>().fetch_all(&self.pool).await?;
        rows.into_iter().map(MemoryRow::into_memory).collect()
    }

    async fn history(&self, owner: &str, id: &str) -> StoreResult<Vec<Memory>> {
        let rows: Vec<MemoryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS}, NULL AS embedding FROM memories m WHERE m.owner = $1 AND m.superseded_by = $2 \
             ORDER BY m.valid_to DESC, m.seq DESC"
        )))
        .bind(owner)
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(MemoryRow::into_memory).collect()
    }

    async fn semantic(
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
            push_filter(&mut query, filter);
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

    async fn keyword(
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
        let mut query = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {COLUMNS}, NULL AS embedding, -bm25(memories_fts) AS score FROM memories_fts \
             CROSS JOIN memories m ON m.rowid = memories_fts.rowid WHERE memories_fts MATCH "
        ));
        query
            .push_bind(fts_query)
            .push(" AND m.valid_to IS NULL AND m.owner = ")
            .push_bind(owner.to_string());
        push_filter(&mut query, filter);
        query.push(" ORDER BY bm25(memories_fts) LIMIT ").push_bind(limit);
        let rows = query.build_query_as::<ScoredRow>().fetch_all(&self.pool).await?;
        rows.into_iter().map(|r| Ok(ScoredMemory { score: r.score, memory: r.row.into_memory()? })).collect()
    }

    async fn record_access(&self, owner: &str, ids: &[String]) -> StoreResult<()> {
        for chunk in ids.chunks(ID_CHUNK) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO memory_reads (owner, id, reads) SELECT m.owner, m.id, 1 FROM memories m \
                 WHERE m.valid_to IS NULL AND m.owner = ",
            );
            query.push_bind(owner.to_string()).push(" AND m.id IN (");
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(id.clone());
            }
            query.push(") ON CONFLICT (owner, id) DO UPDATE SET reads = memory_reads.reads + 1");
            query.build().execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn index_backlog(&self, _owner: Option<&str>, _limit: i64) -> StoreResult<Option<u64>> {
        Ok(Some(0))
    }

    async fn backlog(&self, _owner: &str) -> StoreResult<i64> {
        Ok(0)
    }

    async fn backlog_span(&self, _owner: &str) -> StoreResult<Option<BacklogSpan>> {
        Ok(None)
    }

    async fn changes(&self, owner: &str, from: ChangesFrom, limit: i64) -> StoreResult<ChangePage> {
        // One read transaction: both tables and the owner's seq from the same snapshot.
        let mut tx = self.pool.begin().await?;
        let current: i64 = sqlx::query_scalar("SELECT seq FROM memory_owners WHERE owner = $1")
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or(0);
        let (condition, bound) = changed_after(from);
        let rows: Vec<MemoryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS}, NULL AS embedding FROM memories m WHERE m.owner = $1 AND m.valid_to IS NULL \
             AND m.{condition} ORDER BY m.seq LIMIT $3"
        )))
        .bind(owner)
        .bind(bound)
        .bind(limit + 1)
        .fetch_all(&mut *tx)
        .await?;
        let tombstone_condition = condition.replace("updated_at", "deleted_at");
        let tombstones: Vec<(String, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, seq, deleted_at FROM memory_tombstones WHERE owner = $1 AND {tombstone_condition} \
             ORDER BY seq LIMIT $3"
        )))
        .bind(owner)
        .bind(bound)
        .bind(limit + 1)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let upserts = rows.into_iter().map(MemoryRow::into_memory).collect::<StoreResult<Vec<_>>>()?;
        Ok(page_of(change_list(upserts, tombstones), from, current, limit))
    }

    async fn export_page(
        &self,
        owner: &str,
        after_id: Option<&str>,
        limit: i64,
        with_vectors: bool,
    ) -> StoreResult<Vec<Memory>> {
        let vector = if with_vectors { "m.embedding" } else { "NULL AS embedding" };
        let rows: Vec<MemoryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS}, {vector} FROM memories m WHERE m.owner = $1 AND m.valid_to IS NULL AND m.id > $2 \
             ORDER BY m.id LIMIT $3"
        )))
        .bind(owner)
        .bind(after_id.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(MemoryRow::into_memory).collect()
    }

    async fn existing_contents(&self, owner: &str, contents: &[String]) -> StoreResult<Vec<String>> {
        let keys: Vec<String> = contents.iter().map(|c| content_key(c)).collect();
        let mut found = Vec::new();
        for chunk in keys.chunks(ID_CHUNK) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "SELECT DISTINCT content_key FROM memories WHERE valid_to IS NULL AND owner = ",
            );
            query.push_bind(owner.to_string()).push(" AND content_key IN (");
            let mut list = query.separated(", ");
            for key in chunk {
                list.push_bind(key.clone());
            }
            query.push(")");
            found.extend(query.build_query_scalar::<String>().fetch_all(&self.pool).await?);
        }
        Ok(found)
    }

    async fn count(&self, owner: &str) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM memories WHERE owner = $1 AND valid_to IS NULL")
            .bind(owner)
            .fetch_one(&self.pool)
            .await?)
    }
}
