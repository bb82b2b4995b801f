//! The [`MemoryStore`] both backends run: one set of method bodies over each backend's pool
//! (a macro, as the other SQL stores are). Statements are fixed text; the few the two
//! databases spell differently come from the backend's [`MemorySql`], and lists of any size
//! travel as one JSON parameter, so no statement runs into a bind-variable limit. SQL is put
//! together at run time only where a list or search applies its filter.
//!
//! Each backend module supplies its `MemoryRow` (the memory columns plus `embedding`, with
//! `into_memory`), its `MemorySql`, and the inherent functions the bodies call: `push_tags`
//! (a filter's tag conditions), `insert_rows`, and the searches and vector backlog that
//! work differently on each (`nearest`, `best_matches`, `drain_backlog`, `pending_vectors`,
//! `pending_span`).

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Sqlite};

use super::shared::{
    NEXT_SEQS, TOMBSTONES_AFTER_SEQ, TOMBSTONES_DELETED_AFTER, UPSERT_TOMBSTONE, apply_patch, change_list,
    materialise, page_of, select_memories,
};
use super::{
    BACKLOG_FROM_VECTORS, BacklogSpan, ChangePage, ChangesFrom, Deleted, Inserted, ListFrom, Memory,
    MemoryFilter, MemoryPatch, MemoryStore, NewMemory, PostgresMemories, ScoredMemory, SqliteMemories,
    content_key, postgres, sqlite,
};
use crate::error::StoreResult;
use crate::sql::millis::to_millis;

/// The statements the two databases spell differently. A `$2` list is a JSON array of
/// strings.
pub(super) struct MemorySql {
    /// Opens a write: SQLite takes its write lock at once (`BEGIN IMMEDIATE`) rather than
    /// failing to upgrade a read later; on PostgreSQL taking the owner's seq row-locks the owner.
    pub(super) begin_write: &'static str,
    /// Run first in a change-feed read, so both tables come from one snapshot (SQLite's read
    /// transactions already do).
    pub(super) snapshot: Option<&'static str>,
    /// `$1` owner, `$2` ids: those the owner has, live or history.
    pub(super) taken_ids: &'static str,
    /// `$1` owner, `$2` ids: their tombstones go.
    pub(super) clear_tombstones: &'static str,
    /// `$1` owner, `$2` ids: one more read of each live one.
    pub(super) record_access: &'static str,
    /// `$1` owner, `$2` content keys: those a live memory of the owner's has.
    pub(super) existing_contents: &'static str,
}

const CURRENT_SEQ: &str = "SELECT seq FROM memory_owners WHERE owner = $1";
const DELETE_ROW: &str = "DELETE FROM memories WHERE owner = $1 AND id = $2";
/// A live memory `$2` of owner `$1` and its history rows; nothing when it is not live.
const DELETE_WITH_HISTORY: &str = "DELETE FROM memories WHERE owner = $1 AND (id = $2 OR superseded_by = $2) \
     AND EXISTS (SELECT 1 FROM memories l WHERE l.owner = $1 AND l.id = $2 AND l.valid_to IS NULL)";
const COUNT_LIVE: &str = "SELECT COUNT(*) FROM memories WHERE owner = $1 AND valid_to IS NULL";

macro_rules! sql_memory_store {
    ($name:ident, $db:ty, $row:ty, $sql:expr, vector: $vector:literal, no_vector: $no_vector:literal) => {
        impl $name {
            /// Takes `count` fresh sequence numbers of the owner's, returning the last of them.
            async fn next_seqs(
                conn: &mut <$db as sqlx::Database>::Connection,
                owner: &str,
                count: i64,
            ) -> StoreResult<i64> {
                Ok(sqlx::query_scalar(NEXT_SEQS).bind(owner).bind(count).fetch_one(&mut *conn).await?)
            }

            async fn live_row(
                conn: &mut <$db as sqlx::Database>::Connection,
                owner: &str,
                id: &str,
            ) -> StoreResult<Option<Memory>> {
                let row: Option<$row> = sqlx::query_as(select_memories!(
                    $vector,
                    "WHERE m.owner = $1 AND m.id = $2 AND m.valid_to IS NULL"
                ))
                .bind(owner)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
                row.map(<$row>::into_memory).transpose()
            }

            /// Appends `AND ...` conditions for `filter` on the alias `m`.
            pub(super) fn push_filter(query: &mut QueryBuilder<$db>, filter: &MemoryFilter) {
                if let Some(memory_type) = filter.memory_type {
                    query.push(" AND m.memory_type = ").push_bind(memory_type.as_str());
                }
                if let Some(scope) = filter.scope {
                    query.push(" AND m.scope = ").push_bind(scope.as_str());
                }
                if let Some(platform) = &filter.platform {
                    query.push(" AND m.source_platform = ").push_bind(platform.clone());
                }
                Self::push_tags(query, filter);
                if let Some(start) = filter.start {
                    query.push(" AND m.created_at >= ").push_bind(to_millis(start));
                }
                if let Some(end) = filter.end {
                    query.push(" AND m.created_at <= ").push_bind(to_millis(end));
                }
            }
        }

        #[async_trait]
        impl MemoryStore for $name {
            async fn insert(&self, owner: &str, memories: Vec<NewMemory>) -> StoreResult<Vec<Inserted>> {
                if memories.is_empty() {
                    return Ok(Vec::new());
                }
                let mut tx = self.pool.begin_with($sql.begin_write).await?;
                let count = memories.len() as i64;
                let last = Self::next_seqs(&mut tx, owner, count).await?;
                let given: Vec<&String> = memories.iter().filter_map(|m| m.id.as_ref()).collect();
                let mut taken: HashSet<String> = if given.is_empty() {
                    HashSet::new()
                } else {
                    sqlx::query_scalar($sql.taken_ids)
                        .bind(owner)
                        .bind(Json(&given))
                        .fetch_all(&mut *tx)
                        .await?
                        .into_iter()
                        .collect()
                };
                let now = Utc::now();
                let mut outcomes = Vec::with_capacity(memories.len());
                let mut rows = Vec::with_capacity(memories.len());
                for (offset, new) in memories.into_iter().enumerate() {
                    if let Some(id) = &new.id
                        && !taken.insert(id.clone())
                    {
                        outcomes.push(Inserted::ExistingId(id.clone()));
                        continue;
                    }
                    let memory = materialise(owner, new, last - count + 1 + offset as i64, now);
                    rows.push(memory.clone());
                    outcomes.push(Inserted::Created(Box::new(memory)));
                }
                if !rows.is_empty() {
                    let vectors = rows.iter().filter(|m| m.embedding.is_some()).count();
                    Self::insert_rows(&mut tx, &rows, vectors > BACKLOG_FROM_VECTORS).await?;
                    let ids: Vec<&str> = rows.iter().map(|m| m.id.as_str()).collect();
                    sqlx::query($sql.clear_tombstones).bind(owner).bind(Json(&ids)).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(outcomes)
            }

            async fn get(&self, owner: &str, id: &str, with_vector: bool) -> StoreResult<Option<Memory>> {
                let sql = if with_vector {
                    select_memories!($vector, "WHERE m.owner = $1 AND m.id = $2")
                } else {
                    select_memories!($no_vector, "WHERE m.owner = $1 AND m.id = $2")
                };
                let row: Option<$row> =
                    sqlx::query_as(sql).bind(owner).bind(id).fetch_optional(&self.pool).await?;
                row.map(<$row>::into_memory).transpose()
            }

            async fn update(&self, owner: &str, id: &str, patch: MemoryPatch) -> StoreResult<Option<Memory>> {
                let mut tx = self.pool.begin_with($sql.begin_write).await?;
                // The owner's seq first: it serialises the owner's writes, so the row read
                // next is the one this update replaces.
                let seq = Self::next_seqs(&mut tx, owner, 1).await?;
                let Some(current) = Self::live_row(&mut tx, owner, id).await? else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                if !patch.changes(&current) {
                    tx.rollback().await?;
                    return Ok(Some(Memory { embedding: None, ..current }));
                }
                let (next, history) = apply_patch(&current, patch, seq, Utc::now());
                sqlx::query(DELETE_ROW).bind(owner).bind(id).execute(&mut *tx).await?;
                let rows: Vec<Memory> = history.into_iter().chain([next.clone()]).collect();
                Self::insert_rows(&mut tx, &rows, false).await?;
                tx.commit().await?;
                Ok(Some(Memory { embedding: None, ..next }))
            }

            async fn delete(&self, owner: &str, id: &str) -> StoreResult<Option<Deleted>> {
                let mut tx = self.pool.begin_with($sql.begin_write).await?;
                let seq = Self::next_seqs(&mut tx, owner, 1).await?;
                let removed = sqlx::query(DELETE_WITH_HISTORY).bind(owner).bind(id).execute(&mut *tx).await?;
                if removed.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                let now = Utc::now();
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
                let mut query = QueryBuilder::<$db>::new(select_memories!(
                    $no_vector,
                    "WHERE m.valid_to IS NULL AND m.owner = "
                ));
                query.push_bind(owner.to_string());
                Self::push_filter(&mut query, filter);
                if let ListFrom::After { created_at, id } = from {
                    query.push(" AND (m.created_at, m.id) < (").push_bind(to_millis(*created_at));
                    query.push(", ").push_bind(id.clone()).push(")");
                }
                query.push(" ORDER BY m.created_at DESC, m.id DESC LIMIT ").push_bind(limit);
                if let ListFrom::Offset(offset) = from {
                    query.push(" OFFSET ").push_bind(*offset);
                }
                let rows = query.build_query_as::<$row>().fetch_all(&self.pool).await?;
                rows.into_iter().map(<$row>::into_memory).collect()
            }

            async fn history(&self, owner: &str, id: &str) -> StoreResult<Vec<Memory>> {
                let rows: Vec<$row> = sqlx::query_as(select_memories!(
                    $no_vector,
                    "WHERE m.owner = $1 AND m.superseded_by = $2 ORDER BY m.valid_to DESC, m.seq DESC"
                ))
                .bind(owner)
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(<$row>::into_memory).collect()
            }

            async fn semantic(
                &self,
                owner: &str,
                vector: &[f32],
                filter: &MemoryFilter,
                limit: i64,
            ) -> StoreResult<Vec<ScoredMemory>> {
                self.nearest(owner, vector, filter, limit).await
            }

            async fn keyword(
                &self,
                owner: &str,
                terms: &[String],
                filter: &MemoryFilter,
                limit: i64,
            ) -> StoreResult<Vec<ScoredMemory>> {
                self.best_matches(owner, terms, filter, limit).await
            }

            async fn record_access(&self, owner: &str, ids: &[String]) -> StoreResult<()> {
                if !ids.is_empty() {
                    sqlx::query($sql.record_access).bind(owner).bind(Json(ids)).execute(&self.pool).await?;
                }
                Ok(())
            }

            async fn index_backlog(&self, owner: Option<&str>, limit: i64) -> StoreResult<Option<u64>> {
                self.drain_backlog(owner, limit).await
            }

            async fn backlog(&self, owner: &str) -> StoreResult<i64> {
                self.pending_vectors(owner).await
            }

            async fn backlog_span(&self, owner: &str) -> StoreResult<Option<BacklogSpan>> {
                self.pending_span(owner).await
            }

            async fn changes(&self, owner: &str, from: ChangesFrom, limit: i64) -> StoreResult<ChangePage> {
                let (upserts, tombstones, bound) = match from {
                    ChangesFrom::Seq(seq) => (
                        select_memories!(
                            $no_vector,
                            "WHERE m.owner = $1 AND m.valid_to IS NULL AND m.seq > $2 ORDER BY m.seq LIMIT $3"
                        ),
                        TOMBSTONES_AFTER_SEQ,
                        seq,
                    ),
                    ChangesFrom::UpdatedAfter(at) => (
                        select_memories!(
                            $no_vector,
                            "WHERE m.owner = $1 AND m.valid_to IS NULL AND m.updated_at > $2 ORDER BY m.seq LIMIT $3"
                        ),
                        TOMBSTONES_DELETED_AFTER,
                        to_millis(at),
                    ),
                };
                let mut tx = self.pool.begin().await?;
                if let Some(snapshot) = $sql.snapshot {
                    sqlx::query(snapshot).execute(&mut *tx).await?;
                }
                let current: i64 =
                    sqlx::query_scalar(CURRENT_SEQ).bind(owner).fetch_optional(&mut *tx).await?.unwrap_or(0);
                let rows: Vec<$row> = sqlx::query_as(upserts)
                    .bind(owner)
                    .bind(bound)
                    .bind(limit + 1)
                    .fetch_all(&mut *tx)
                    .await?;
                let tombstones: Vec<(String, i64, i64)> = sqlx::query_as(tombstones)
                    .bind(owner)
                    .bind(bound)
                    .bind(limit + 1)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                let upserts = rows.into_iter().map(<$row>::into_memory).collect::<StoreResult<Vec<_>>>()?;
                Ok(page_of(change_list(upserts, tombstones), from, current, limit))
            }

            async fn export_page(
                &self,
                owner: &str,
                after_id: Option<&str>,
                limit: i64,
                with_vectors: bool,
            ) -> StoreResult<Vec<Memory>> {
                let sql = if with_vectors {
                    select_memories!(
                        $vector,
                        "WHERE m.owner = $1 AND m.valid_to IS NULL AND m.id > $2 ORDER BY m.id LIMIT $3"
                    )
                } else {
                    select_memories!(
                        $no_vector,
                        "WHERE m.owner = $1 AND m.valid_to IS NULL AND m.id > $2 ORDER BY m.id LIMIT $3"
                    )
                };
                let rows: Vec<$row> = sqlx::query_as(sql)
                    .bind(owner)
                    .bind(after_id.unwrap_or(""))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(<$row>::into_memory).collect()
            }

            async fn existing_contents(&self, owner: &str, contents: &[String]) -> StoreResult<Vec<String>> {
                let keys: Vec<String> = contents.iter().map(|c| content_key(c)).collect();
                Ok(sqlx::query_scalar($sql.existing_contents)
                    .bind(owner)
                    .bind(Json(&keys))
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn count(&self, owner: &str) -> StoreResult<i64> {
                Ok(sqlx::query_scalar(COUNT_LIVE).bind(owner).fetch_one(&self.pool).await?)
            }
        }
    };
}

sql_memory_store!(
    SqliteMemories,
    Sqlite,
    sqlite::MemoryRow,
    sqlite::SQL,
    vector: "m.embedding",
    no_vector: "NULL"
);
sql_memory_store!(
    PostgresMemories,
    Postgres,
    postgres::MemoryRow,
    postgres::SQL,
    vector: "m.embedding::real[]",
    no_vector: "NULL::real[]"
);
