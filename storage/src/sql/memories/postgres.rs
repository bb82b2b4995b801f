//! [`MemoryStore`] on PostgreSQL + pgvector: tags as `TEXT[]` (GIN), vectors in an
//! unsized `vector` column with a partial HNSW index per dimension in use (cosine), searched
//! with iterative index scans so owner and filter conditions do not lose recall; keyword
//! search through the generated English `tsvector` column. Inserts of any size are one
//! `UNNEST` statement, vectors travelling as one flat `real[]`.
//!
//! HNSW takes inserts at a few hundred a second, so a bulk insert leaves its vectors
//! outside the index (`vector_pending`) and [`MemoryStore::index_backlog`] moves them in
//! later; semantic search reads the index and scans the owner's pending vectors exactly.

use std::collections::HashSet;
use std::sync::Mutex;

use serde_json::Value;
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, PgPool, Postgres, QueryBuilder};

use super::query::content_key;
use super::shared::{RowColumns, memory_columns};
use super::store::MemorySql;
use super::{BacklogSpan, Memory, MemoryFilter, ScoredMemory};
use crate::error::{StoreError, StoreResult};
use crate::sql::millis::{from_millis, to_millis};

/// `= ANY(ARRAY(…))` makes a list an index condition (see the job store).
pub(super) const SQL: MemorySql = MemorySql {
    begin_write: "BEGIN",
    snapshot: Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"),
    taken_ids: "SELECT id FROM memories WHERE owner = $1 \
         AND id = ANY(ARRAY(SELECT jsonb_array_elements_text($2)))",
    clear_tombstones: "DELETE FROM memory_tombstones WHERE owner = $1 \
         AND id = ANY(ARRAY(SELECT jsonb_array_elements_text($2)))",
    // A count lost to a crash is harmless, so this write does not wait for the WAL flush
    // (`set_config(.., true)` holds until the statement's own transaction commits). In id
    // order, so searches counting the same memories lock their rows in one order.
    record_access: "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)) \
         INSERT INTO memory_reads (owner, id, reads) SELECT m.owner, m.id, 1 FROM memories m, relaxed \
         WHERE m.owner = $1 AND m.id = ANY(ARRAY(SELECT jsonb_array_elements_text($2))) AND m.valid_to IS NULL \
         ORDER BY m.id ON CONFLICT (owner, id) DO UPDATE SET reads = memory_reads.reads + 1",
    existing_contents: "SELECT DISTINCT content_key FROM memories WHERE owner = $1 AND valid_to IS NULL \
         AND content_key = ANY(ARRAY(SELECT jsonb_array_elements_text($2)))",
};

/// The dimension the migration indexes (all-MiniLM-L6-v2's).
const MIGRATED_DIMS: usize = 384;

/// pgvector's default `hnsw.ef_search`, which a search asking for more rows raises.
const DEFAULT_EF_SEARCH: i64 = 40;

pub struct PostgresMemories {
    pub(super) pool: PgPool,
    /// Dimensions whose HNSW index is known to exist.
    indexed: Mutex<HashSet<usize>>,
}

impl PostgresMemories {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, indexed: Mutex::new(HashSet::from([MIGRATED_DIMS])) }
    }

    /// Creates the partial HNSW index for vectors of `dims` unless it exists (under an
    /// advisory lock, so replicas starting together do not race).
    async fn ensure_vector_index(&self, dims: usize) -> StoreResult<()> {
        if self.indexed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&dims) {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('memories_embedding_index'))")
            .execute(&mut *tx)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE INDEX IF NOT EXISTS memories_vectors_{dims} ON memories \
             USING hnsw ((embedding::vector({dims})) vector_cosine_ops) \
             WHERE embedding_dims = {dims} AND valid_to IS NULL AND NOT vector_pending"
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.indexed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(dims);
        Ok(())
    }

    /// A filter's tag conditions on the alias `m` (the GIN index answers both).
    pub(super) fn push_tags(query: &mut QueryBuilder<Postgres>, filter: &MemoryFilter) {
        if !filter.tags_all.is_empty() {
            query.push(" AND m.tags @> ").push_bind(filter.tags_all.clone());
        }
        if !filter.tags_any.is_empty() {
            query.push(" AND m.tags && ").push_bind(filter.tags_any.clone());
        }
    }

    /// Inserts `memories` with one statement: every column an array, vectors one flat array
    /// sliced per row; `to_backlog` leaves the vectors out of the HNSW index for now.
    pub(super) async fn insert_rows(
        conn: &mut PgConnection,
        memories: &[Memory],
        to_backlog: bool,
    ) -> StoreResult<()> {
        if memories.is_empty() {
            return Ok(());
        }
        let mut flat: Vec<f32> = Vec::new();
        let mut offsets: Vec<Option<i32>> = Vec::with_capacity(memories.len());
        let mut dims: Vec<Option<i32>> = Vec::with_capacity(memories.len());
        for memory in memories {
            match &memory.embedding {
                Some(vector) => {
                    offsets.push(Some(
                        i32::try_from(flat.len()).map_err(|e| StoreError::backend("database", e))?,
                    ));
                    dims.push(Some(vector.len() as i32));
                    flat.extend_from_slice(vector);
                }
                None => {
                    offsets.push(None);
                    dims.push(None);
                }
            }
        }
        let column =
            |f: &dyn Fn(&Memory) -> Option<String>| memories.iter().map(f).collect::<Vec<Option<String>>>();
        sqlx::query(
            "INSERT INTO memories (owner, id, content, content_key, memory_type, scope, source_url, source_platform, \
             source_timestamp, source_conversation_id, confidence, access_count, tags, created_at, updated_at, \
             valid_from, valid_to, superseded_by, provenance, seq, embedding, embedding_dims, vector_pending) \
             SELECT r.owner, r.id, r.content, r.content_key, r.memory_type, r.scope, r.source_url, r.source_platform, \
             r.source_timestamp, r.source_conversation_id, r.confidence, r.access_count, \
             ARRAY(SELECT jsonb_array_elements_text(r.tags::jsonb)), r.created_at, r.updated_at, r.valid_from, \
             r.valid_to, r.superseded_by, r.provenance::jsonb, r.seq, \
             CASE WHEN r.dims IS NULL THEN NULL ELSE ($21::real[])[r.off + 1 : r.off + r.dims]::vector END, r.dims, \
             r.dims IS NOT NULL AND $24 \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
             $8::text[], $9::int8[], $10::text[], $11::float8[], $12::int8[], $13::text[], $14::int8[], $15::int8[], \
             $16::int8[], $17::int8[], $18::text[], $19::text[], $20::int8[], $22::int4[], $23::int4[]) \
             AS r(owner, id, content, content_key, memory_type, scope, source_url, source_platform, source_timestamp, \
             source_conversation_id, confidence, access_count, tags, created_at, updated_at, valid_from, valid_to, \
             superseded_by, provenance, seq, off, dims)",
        )
        .bind(memories.iter().map(|m| m.owner.clone()).collect::<Vec<_>>())
        .bind(memories.iter().map(|m| m.id.clone()).collect::<Vec<_>>())
        .bind(memories.iter().map(|m| m.content.clone()).collect::<Vec<_>>())
        .bind(memories.iter().map(|m| content_key(&m.content)).collect::<Vec<_>>())
        .bind(memories.iter().map(|m| m.memory_type.as_str().to_string()).collect::<Vec<_>>())
        .bind(memories.iter().map(|m| m.scope.as_str().to_string()).collect::<Vec<_>>())
        .bind(column(&|m| m.source_url.clone()))
        .bind(column(&|m| m.source_platform.clone()))
        .bind(memories.iter().map(|m| m.source_timestamp.map(to_millis)).collect::<Vec<_>>())
        .bind(column(&|m| m.source_conversation_id.clone()))
        .bind(memories.iter().map(|m| m.confidence).collect::<Vec<_>>())
        .bind(memories.iter().map(|m| m.access_count).collect::<Vec<_>>())
        .bind(memories.iter().map(|m| serde_json::to_string(&m.tags).unwrap_or_else(|_| "[]".into())).collect::<Vec<_>>())
        .bind(memories.iter().map(|m| to_millis(m.created_at)).collect::<Vec<_>>())
        .bind(memories.iter().map(|m| to_millis(m.updated_at)).collect::<Vec<_>>())
        .bind(memories.iter().map(|m| to_millis(m.valid_from)).collect::<Vec<_>>())
        .bind(memories.iter().map(|m| m.valid_to.map(to_millis)).collect::<Vec<_>>())
        .bind(column(&|m| m.superseded_by.clone()))
        .bind(column(&|m| m.provenance.as_ref().map(Value::to_string)))
        .bind(memories.iter().map(|m| m.seq).collect::<Vec<_>>())
        .bind(flat)
        .bind(offsets)
        .bind(dims)
        .bind(to_backlog)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// The nearest live vectors: the HNSW index, and the owner's backlog scanned exactly.
    pub(super) async fn nearest(
        &self,
        owner: &str,
        vector: &[f32],
        filter: &MemoryFilter,
        limit: i64,
    ) -> StoreResult<Vec<ScoredMemory>> {
        let dims = vector.len();
        if dims == 0 || limit <= 0 {
            return Ok(Vec::new());
        }
        self.ensure_vector_index(dims).await?;
        // Indexed vectors through HNSW and, only while the owner has a backlog, the pending
        // ones by an exact scan (the backlog check gates that side, so a plan made from
        // statistics taken during an import cannot scan the table long after it).
        let mut query = QueryBuilder::<Postgres>::new("SELECT hits.*, 1 - hits.distance AS score FROM (");
        push_nearest(&mut query, owner, vector, filter, limit, false);
        query.push(" UNION ALL ");
        push_nearest(&mut query, owner, vector, filter, limit, true);
        query.push(") hits ORDER BY hits.distance LIMIT ").push_bind(limit);
        let query = query.build_query_as::<ScoredRow>();
        let rows = if limit <= DEFAULT_EF_SEARCH {
            query.fetch_all(&self.pool).await?
        } else {
            // HNSW keeps `ef_search` candidates; fewer than the rows asked for costs recall.
            let mut tx = self.pool.begin().await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL hnsw.ef_search = {}", limit.min(1000))))
                .execute(&mut *tx)
                .await?;
            let rows = query.fetch_all(&mut *tx).await?;
            tx.commit().await?;
            rows
        };
        rows.into_iter().map(|r| Ok(ScoredMemory { score: r.score, memory: r.row.into_memory()? })).collect()
    }

    /// Full-text matches of any of `terms`, best first by `ts_rank`.
    pub(super) async fn best_matches(
        &self,
        owner: &str,
        terms: &[String],
        filter: &MemoryFilter,
        limit: i64,
    ) -> StoreResult<Vec<ScoredMemory>> {
        // Terms are letters and digits only, so joined with `|` they are a valid tsquery.
        let terms: Vec<&String> = terms.iter().filter(|t| t.chars().all(char::is_alphanumeric)).collect();
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let tsquery = terms.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(" | ");
        let mut query = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            memory_columns!(),
            ", NULL::real[] AS embedding, ts_rank(m.search, q, 1)::float8 AS score \
             FROM memories m, to_tsquery('english', "
        ));
        query.push_bind(tsquery).push(") q WHERE m.search @@ q AND m.valid_to IS NULL AND m.owner = ");
        query.push_bind(owner.to_string());
        Self::push_filter(&mut query, filter);
        query.push(" ORDER BY score DESC, m.id LIMIT ").push_bind(limit);
        let rows = query.build_query_as::<ScoredRow>().fetch_all(&self.pool).await?;
        rows.into_iter().map(|r| Ok(ScoredMemory { score: r.score, memory: r.row.into_memory()? })).collect()
    }

    /// Moves up to `limit` pending vectors into the HNSW index.
    pub(super) async fn drain_backlog(&self, owner: Option<&str>, limit: i64) -> StoreResult<Option<u64>> {
        // One drainer at a time: HNSW inserts into one index gain nothing from company, and
        // jobs queued one after another would otherwise pile up on the cores. A drainer that
        // finds the lock taken moves nothing and is told so (it may be draining someone else's).
        let mut tx = self.pool.begin().await?;
        let ours: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('memories_vector_backlog'))")
                .fetch_one(&mut *tx)
                .await?;
        if !ours {
            return Ok(None);
        }
        let moved = sqlx::query(
            "WITH batch AS (SELECT owner, id FROM memories WHERE vector_pending AND ($1::text IS NULL OR owner = $1) \
             ORDER BY owner, seq LIMIT $2 FOR UPDATE) \
             UPDATE memories m SET vector_pending = false FROM batch WHERE m.owner = batch.owner AND m.id = batch.id",
        )
        .bind(owner)
        .bind(limit)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(moved.rows_affected()))
    }

    pub(super) async fn pending_vectors(&self, owner: &str) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM memories WHERE owner = $1 AND vector_pending")
            .bind(owner)
            .fetch_one(&self.pool)
            .await?)
    }

    pub(super) async fn pending_span(&self, owner: &str) -> StoreResult<Option<BacklogSpan>> {
        // Two probes of the backlog index by seq: pending rows come only from inserts,
        // stamped `updated_at` in seq order.
        let span: (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT updated_at FROM memories WHERE owner = $1 AND vector_pending ORDER BY seq LIMIT 1), \
             (SELECT updated_at FROM memories WHERE owner = $1 AND vector_pending ORDER BY seq DESC LIMIT 1)",
        )
        .bind(owner)
        .fetch_one(&self.pool)
        .await?;
        Ok(match span {
            (Some(oldest), Some(newest)) => {
                Some(BacklogSpan { oldest: from_millis(oldest), newest: from_millis(newest) })
            }
            _ => None,
        })
    }
}

#[derive(FromRow)]
pub(super) struct MemoryRow {
    #[sqlx(flatten)]
    columns: RowColumns,
    tags: Vec<String>,
    provenance: Option<Json<Value>>,
    embedding: Option<Vec<f32>>,
}

impl MemoryRow {
    pub(super) fn into_memory(self) -> StoreResult<Memory> {
        self.columns.into_memory(self.tags, self.provenance.map(|p| p.0), self.embedding)
    }
}

/// One side of the semantic search: the `limit` nearest live vectors of `dims` that are in
/// the HNSW index (`pending == false`) or wait for it, with their cosine `distance`.
fn push_nearest(
    query: &mut QueryBuilder<Postgres>,
    owner: &str,
    vector: &[f32],
    filter: &MemoryFilter,
    limit: i64,
    pending: bool,
) {
    let dims = vector.len();
    let distance = |query: &mut QueryBuilder<Postgres>| {
        query.push(format!("m.embedding::vector({dims}) <=> "));
        query.push_bind(vector.to_vec()).push(format!("::real[]::vector({dims})"));
    };
    query.push(concat!("(SELECT ", memory_columns!(), ", NULL::real[] AS embedding, ("));
    distance(query);
    // The literal conditions match the partial indexes' predicates, so the planner can use them.
    let not = if pending { "" } else { "NOT " };
    query.push(format!(
        ")::float8 AS distance FROM memories m WHERE m.embedding_dims = {dims} AND m.valid_to IS NULL \
         AND {not}m.vector_pending AND m.owner = "
    ));
    query.push_bind(owner.to_string());
    if pending {
        // Uncorrelated, so PostgreSQL checks it once and skips the scan when it is false.
        query.push(" AND EXISTS (SELECT 1 FROM memories b WHERE b.vector_pending AND b.owner = ");
        query.push_bind(owner.to_string()).push(")");
    }
    PostgresMemories::push_filter(query, filter);
    query.push(" ORDER BY ");
    distance(query);
    query.push(" LIMIT ").push_bind(limit).push(")");
}

#[derive(FromRow)]
struct ScoredRow {
    #[sqlx(flatten)]
    row: MemoryRow,
    score: f64,
}
