//! The blob sync index, on SQLite and PostgreSQL: what each namespace holds (md5, size, last
//! change, version), which paths are tombstones, each path's last versions, and the writes in
//! flight. Every change takes the namespace's next sequence number under the namespace's row
//! lock (SQLite: the write lock), so `changes(since)` never skips a change that commits later.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Serialize;
use sqlx::{FromRow, PgPool, SqlitePool};

use super::millis::{from_millis, to_millis};
use crate::error::StoreResult;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexEntry {
    pub namespace: String,
    pub path: String,
    pub md5: String,
    pub size: i64,
    pub last_modified: DateTime<Utc>,
    pub is_deleted: bool,
    /// The namespace sequence number of this entry's last change.
    pub seq: i64,
    /// How many changes the path has seen (its latest version number).
    pub version: i64,
    pub content_type: Option<String>,
}

/// One kept version of a path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionEntry {
    pub version: i64,
    pub md5: String,
    pub size: i64,
    pub content_type: Option<String>,
    pub is_deleted: bool,
    pub created_at: DateTime<Utc>,
}

/// A live object as the blob store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub md5: String,
    pub size: i64,
    pub last_modified: DateTime<Utc>,
    pub content_type: Option<String>,
}

/// What a path held before a store write: nothing live, or a live object with this md5.
#[derive(Debug, Clone, PartialEq)]
pub enum PathState {
    Absent,
    Live(String),
}

/// A store write that succeeded: from the state its precondition named to the new object
/// (`None`: deleted).
#[derive(Debug, Clone)]
pub struct Transition {
    pub from: PathState,
    pub to: Option<Observed>,
}

/// The outcome of `settle`.
#[derive(Debug, Clone, Default)]
pub struct Settled {
    /// The path's entry afterwards (a tombstone for a deleted path; none if never seen).
    pub entry: Option<IndexEntry>,
    /// Whether the entry changed (and so took a new sequence number).
    pub changed: bool,
    /// MD5s of versions dropped beyond the kept count that no kept version shares.
    pub pruned: Vec<String>,
}

/// A page of changes after a cursor.
#[derive(Debug, Clone)]
pub struct ChangePage {
    pub entries: Vec<IndexEntry>,
    /// Where the next `changes` call starts.
    pub cursor: i64,
    pub has_more: bool,
    /// Changes up to this sequence number may have been tombstones since purged.
    pub purged_seq: i64,
}

/// A write that began and has not been settled: `(id, namespace, path)`.
pub type PendingWrite = (String, String, String);

/// Reads the blob store's current object for the path being settled.
pub type HeadFn<'a> = &'a (dyn Fn() -> BoxFuture<'static, StoreResult<Option<Observed>>> + Send + Sync);

#[async_trait]
pub trait BlobIndexStore: Send + Sync {
    /// Records that a store write of `path` is starting; returns its id for `end_write`.
    async fn begin_write(&self, namespace: &str, path: &str) -> StoreResult<String>;

    async fn end_write(&self, id: &str) -> StoreResult<()>;

    /// Writes begun before `before` and never ended (their process died between the store
    /// and the index).
    async fn stale_writes(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<Vec<PendingWrite>>;

    /// Brings the path's entry in step with the blob store, under the namespace lock. The
    /// `hint` (a write this process just made) is applied when the entry is still in the
    /// state the write started from; otherwise `head` is asked what the store holds, so
    /// writes whose index updates arrive out of order still leave the index agreeing with
    /// the store. A new live state or a delete adds a version and keeps `keep_versions`.
    async fn settle(
        &self,
        namespace: &str,
        path: &str,
        hint: Option<&Transition>,
        head: HeadFn<'_>,
        keep_versions: u32,
    ) -> StoreResult<Settled>;

    /// Records an entry as given with the next sequence number (imports and tests).
    async fn upsert(&self, entry: &IndexEntry) -> StoreResult<()>;

    async fn get(&self, namespace: &str, path: &str) -> StoreResult<Option<IndexEntry>>;

    /// Entries changed after `since`, in change order, at most `limit`.
    async fn changes(&self, namespace: &str, since: i64, limit: i64) -> StoreResult<ChangePage>;

    /// The path's kept versions, newest first.
    async fn versions(&self, namespace: &str, path: &str) -> StoreResult<Vec<VersionEntry>>;

    /// Deletes tombstones last changed before `before` (in `namespace`, or every one), with
    /// their versions; returns the `(namespace, path)` of each.
    async fn purge_tombstones(
        &self,
        before: DateTime<Utc>,
        namespace: Option<&str>,
    ) -> StoreResult<Vec<(String, String)>>;
}

#[derive(FromRow)]
struct EntryRow {
    namespace: String,
    path: String,
    md5: String,
    size: i64,
    last_modified: i64,
    is_deleted: bool,
    seq: i64,
    version: i64,
    content_type: Option<String>,
}

impl From<EntryRow> for IndexEntry {
    fn from(r: EntryRow) -> Self {
        IndexEntry {
            namespace: r.namespace,
            path: r.path,
            md5: r.md5,
            size: r.size,
            last_modified: from_millis(r.last_modified),
            is_deleted: r.is_deleted,
            seq: r.seq,
            version: r.version,
            content_type: r.content_type,
        }
    }
}

#[derive(FromRow)]
struct VersionRow {
    version: i64,
    md5: String,
    size: i64,
    content_type: Option<String>,
    is_deleted: bool,
    created_at: i64,
}

impl From<VersionRow> for VersionEntry {
    fn from(r: VersionRow) -> Self {
        VersionEntry {
            version: r.version,
            md5: r.md5,
            size: r.size,
            content_type: r.content_type,
            is_deleted: r.is_deleted,
            created_at: from_millis(r.created_at),
        }
    }
}

/// What the entry becomes, given what it is and what the store holds.
fn next_entry(current: Option<&IndexEntry>, target: Option<&Observed>) -> Option<NextEntry> {
    match (current, target) {
        (Some(entry), Some(object)) if !entry.is_deleted && entry.md5 == object.md5 => None,
        (_, Some(object)) => Some(NextEntry {
            md5: object.md5.clone(),
            size: object.size,
            last_modified: object.last_modified,
            is_deleted: false,
            content_type: object.content_type.clone(),
        }),
        (Some(entry), None) if !entry.is_deleted => Some(NextEntry {
            md5: entry.md5.clone(),
            size: entry.size,
            last_modified: Utc::now(),
            is_deleted: true,
            content_type: entry.content_type.clone(),
        }),
        (_, None) => None,
    }
}

struct NextEntry {
    md5: String,
    size: i64,
    last_modified: DateTime<Utc>,
    is_deleted: bool,
    content_type: Option<String>,
}

fn state_of(entry: Option<&IndexEntry>) -> PathState {
    match entry {
        Some(e) if !e.is_deleted => PathState::Live(e.md5.clone()),
        _ => PathState::Absent,
    }
}

/// Takes the namespace's next sequence number; on PostgreSQL this also locks the namespace
/// row until the transaction ends.
const NEXT_SEQ: &str = "INSERT INTO blob_namespaces (namespace, seq) VALUES ($1, 1) \
     ON CONFLICT (namespace) DO UPDATE SET seq = blob_namespaces.seq + 1 RETURNING seq";
const UPSERT: &str = "INSERT INTO blob_index \
     (namespace, path, md5, size, last_modified, is_deleted, seq, version, content_type) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (namespace, path) DO UPDATE SET \
     md5 = excluded.md5, size = excluded.size, last_modified = excluded.last_modified, \
     is_deleted = excluded.is_deleted, seq = excluded.seq, version = excluded.version, \
     content_type = excluded.content_type";
const GET: &str = "SELECT namespace, path, md5, size, last_modified, is_deleted, seq, version, content_type \
     FROM blob_index WHERE namespace = $1 AND path = $2";
const INSERT_VERSION: &str = "INSERT INTO blob_versions \
     (namespace, path, version, md5, size, content_type, is_deleted, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (namespace, path, version) DO NOTHING";
const DROP_OLD_VERSIONS: &str =
    "DELETE FROM blob_versions WHERE namespace = $1 AND path = $2 AND version <= $3 RETURNING md5";
const KEPT_MD5S: &str = "SELECT DISTINCT md5 FROM blob_versions WHERE namespace = $1 AND path = $2";
const VERSIONS: &str = "SELECT version, md5, size, content_type, is_deleted, created_at FROM blob_versions \
     WHERE namespace = $1 AND path = $2 ORDER BY version DESC";
const NAMESPACE: &str = "SELECT seq, purged_seq FROM blob_namespaces WHERE namespace = $1";
const CHANGES: &str = "SELECT namespace, path, md5, size, last_modified, is_deleted, seq, version, content_type \
     FROM blob_index WHERE namespace = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4";
const BEGIN_WRITE: &str =
    "INSERT INTO blob_pending (id, namespace, path, started_at) VALUES ($1, $2, $3, $4)";
const END_WRITE: &str = "DELETE FROM blob_pending WHERE id = $1";
const STALE_WRITES: &str =
    "SELECT id, namespace, path FROM blob_pending WHERE started_at < $1 ORDER BY started_at LIMIT $2";
const OLD_TOMBSTONES: &str = "SELECT namespace, path, seq FROM blob_index WHERE is_deleted AND last_modified < $1 \
     AND ($2 IS NULL OR namespace = $2) ORDER BY namespace, seq LIMIT 1000";
const DELETE_ENTRY: &str =
    "DELETE FROM blob_index WHERE namespace = $1 AND path = $2 AND is_deleted AND seq = $3";
const DELETE_VERSIONS: &str = "DELETE FROM blob_versions WHERE namespace = $1 AND path = $2";
const RAISE_PURGED: &str =
    "UPDATE blob_namespaces SET purged_seq = $2 WHERE namespace = $1 AND purged_seq < $2";

macro_rules! sql_blob_index_store {
    ($name:ident, $pool:ty, $db:ty, $begin:literal) => {
        pooled_store!($name, $pool);

        impl $name {
            async fn entry_in<'c, E>(
                executor: E,
                namespace: &str,
                path: &str,
            ) -> StoreResult<Option<IndexEntry>>
            where
                E: sqlx::Executor<'c, Database = $db>,
            {
                let row: Option<EntryRow> =
                    sqlx::query_as(GET).bind(namespace).bind(path).fetch_optional(executor).await?;
                Ok(row.map(IndexEntry::from))
            }

            async fn upsert_in<'c, E>(executor: E, e: &IndexEntry) -> StoreResult<()>
            where
                E: sqlx::Executor<'c, Database = $db>,
            {
                sqlx::query(UPSERT)
                    .bind(&e.namespace)
                    .bind(&e.path)
                    .bind(&e.md5)
                    .bind(e.size)
                    .bind(to_millis(e.last_modified))
                    .bind(e.is_deleted)
                    .bind(e.seq)
                    .bind(e.version)
                    .bind(&e.content_type)
                    .execute(executor)
                    .await?;
                Ok(())
            }
        }

        #[async_trait]
        impl BlobIndexStore for $name {
            async fn begin_write(&self, namespace: &str, path: &str) -> StoreResult<String> {
                let id = crate::ids::new_id();
                sqlx::query(BEGIN_WRITE)
                    .bind(&id)
                    .bind(namespace)
                    .bind(path)
                    .bind(to_millis(Utc::now()))
                    .execute(&self.pool)
                    .await?;
                Ok(id)
            }

            async fn end_write(&self, id: &str) -> StoreResult<()> {
                sqlx::query(END_WRITE).bind(id).execute(&self.pool).await?;
                Ok(())
            }

            async fn stale_writes(
                &self,
                before: DateTime<Utc>,
                limit: i64,
            ) -> StoreResult<Vec<PendingWrite>> {
                Ok(sqlx::query_as(STALE_WRITES)
                    .bind(to_millis(before))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn settle(
                &self,
                namespace: &str,
                path: &str,
                hint: Option<&Transition>,
                head: HeadFn<'_>,
                keep_versions: u32,
            ) -> StoreResult<Settled> {
                let mut tx = self.pool.begin_with($begin).await?;
                let seq: i64 = sqlx::query_scalar(NEXT_SEQ).bind(namespace).fetch_one(&mut *tx).await?;
                let current = Self::entry_in(&mut *tx, namespace, path).await?;
                let target = match hint {
                    Some(t) if t.from == state_of(current.as_ref()) => t.to.clone(),
                    _ => head().await?,
                };
                let Some(next) = next_entry(current.as_ref(), target.as_ref()) else {
                    // Nothing changed: the sequence number taken is left unused.
                    tx.rollback().await?;
                    return Ok(Settled { entry: current, changed: false, pruned: Vec::new() });
                };
                let version = current.as_ref().map_or(0, |e| e.version) + 1;
                let entry = IndexEntry {
                    namespace: namespace.to_string(),
                    path: path.to_string(),
                    md5: next.md5,
                    size: next.size,
                    last_modified: next.last_modified,
                    is_deleted: next.is_deleted,
                    seq,
                    version,
                    content_type: next.content_type,
                };
                Self::upsert_in(&mut *tx, &entry).await?;
                sqlx::query(INSERT_VERSION)
                    .bind(namespace)
                    .bind(path)
                    .bind(version)
                    .bind(&entry.md5)
                    .bind(entry.size)
                    .bind(&entry.content_type)
                    .bind(entry.is_deleted)
                    .bind(to_millis(Utc::now()))
                    .execute(&mut *tx)
                    .await?;
                let dropped: Vec<String> = sqlx::query_scalar(DROP_OLD_VERSIONS)
                    .bind(namespace)
                    .bind(path)
                    .bind(version - i64::from(keep_versions.max(1)))
                    .fetch_all(&mut *tx)
                    .await?;
                let pruned = if dropped.is_empty() {
                    Vec::new()
                } else {
                    let kept: Vec<String> =
                        sqlx::query_scalar(KEPT_MD5S).bind(namespace).bind(path).fetch_all(&mut *tx).await?;
                    let mut pruned: Vec<String> = dropped.into_iter().filter(|m| !kept.contains(m)).collect();
                    pruned.sort();
                    pruned.dedup();
                    pruned
                };
                tx.commit().await?;
                Ok(Settled { entry: Some(entry), changed: true, pruned })
            }

            async fn upsert(&self, entry: &IndexEntry) -> StoreResult<()> {
                let mut tx = self.pool.begin_with($begin).await?;
                let seq: i64 =
                    sqlx::query_scalar(NEXT_SEQ).bind(&entry.namespace).fetch_one(&mut *tx).await?;
                Self::upsert_in(&mut *tx, &IndexEntry { seq, ..entry.clone() }).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn get(&self, namespace: &str, path: &str) -> StoreResult<Option<IndexEntry>> {
                Self::entry_in(&self.pool, namespace, path).await
            }

            async fn changes(&self, namespace: &str, since: i64, limit: i64) -> StoreResult<ChangePage> {
                // The namespace's sequence number is read first: every change up to it has
                // committed, so a cursor at or below it never skips one.
                let (last, purged_seq): (i64, i64) = sqlx::query_as(NAMESPACE)
                    .bind(namespace)
                    .fetch_optional(&self.pool)
                    .await?
                    .unwrap_or((0, 0));
                let rows: Vec<EntryRow> = sqlx::query_as(CHANGES)
                    .bind(namespace)
                    .bind(since)
                    .bind(last)
                    .bind(limit + 1)
                    .fetch_all(&self.pool)
                    .await?;
                let has_more = rows.len() as i64 > limit;
                let entries: Vec<IndexEntry> =
                    rows.into_iter().take(limit as usize).map(IndexEntry::from).collect();
                let cursor = match entries.last() {
                    Some(entry) if has_more => entry.seq,
                    _ => last.max(since),
                };
                Ok(ChangePage { entries, cursor, has_more, purged_seq })
            }

            async fn versions(&self, namespace: &str, path: &str) -> StoreResult<Vec<VersionEntry>> {
                let rows: Vec<VersionRow> =
                    sqlx::query_as(VERSIONS).bind(namespace).bind(path).fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(VersionEntry::from).collect())
            }

            async fn purge_tombstones(
                &self,
                before: DateTime<Utc>,
                namespace: Option<&str>,
            ) -> StoreResult<Vec<(String, String)>> {
                let mut purged = Vec::new();
                loop {
                    let batch: Vec<(String, String, i64)> = sqlx::query_as(OLD_TOMBSTONES)
                        .bind(to_millis(before))
                        .bind(namespace)
                        .fetch_all(&self.pool)
                        .await?;
                    if batch.is_empty() {
                        return Ok(purged);
                    }
                    for (ns, path, seq) in batch {
                        let mut tx = self.pool.begin_with($begin).await?;
                        // Taking a sequence number locks the namespace against a concurrent
                        // re-create of the path.
                        sqlx::query_scalar::<_, i64>(NEXT_SEQ).bind(&ns).fetch_one(&mut *tx).await?;
                        let deleted = sqlx::query(DELETE_ENTRY)
                            .bind(&ns)
                            .bind(&path)
                            .bind(seq)
                            .execute(&mut *tx)
                            .await?;
                        if deleted.rows_affected() == 1 {
                            sqlx::query(DELETE_VERSIONS).bind(&ns).bind(&path).execute(&mut *tx).await?;
                            sqlx::query(RAISE_PURGED).bind(&ns).bind(seq).execute(&mut *tx).await?;
                            purged.push((ns, path));
                        }
                        tx.commit().await?;
                    }
                }
            }
        }
    };
}

// SQLite: `BEGIN IMMEDIATE` takes the write lock at once, so the read and the write of a
// settle cannot interleave with another's. PostgreSQL: the namespace row lock does it.
sql_blob_index_store!(SqliteBlobIndex, SqlitePool, sqlx::Sqlite, "BEGIN IMMEDIATE");
sql_blob_index_store!(PostgresBlobIndex, PgPool, sqlx::Postgres, "BEGIN");

#[cfg(test)]
mod tests {
    use super::*;

    fn live(md5: &str) -> IndexEntry {
        IndexEntry {
            namespace: "n".into(),
            path: "p".into(),
            md5: md5.into(),
            size: 1,
            last_modified: Utc::now(),
            is_deleted: false,
            seq: 1,
            version: 1,
            content_type: None,
        }
    }

    fn object(md5: &str) -> Observed {
        Observed { md5: md5.into(), size: 2, last_modified: Utc::now(), content_type: None }
    }

    #[test]
    fn next_entry_follows_the_store() {
        assert!(next_entry(Some(&live("a")), Some(&object("a"))).is_none(), "same object: no change");
        assert_eq!(next_entry(Some(&live("a")), Some(&object("b"))).unwrap().md5, "b");
        let deleted = next_entry(Some(&live("a")), None).unwrap();
        assert!(deleted.is_deleted && deleted.md5 == "a");
        let tombstone = IndexEntry { is_deleted: true, ..live("a") };
        assert!(next_entry(Some(&tombstone), None).is_none(), "already a tombstone");
        assert!(!next_entry(Some(&tombstone), Some(&object("a"))).unwrap().is_deleted, "re-created");
        assert!(next_entry(None, None).is_none());
    }
}
