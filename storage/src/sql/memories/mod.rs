//! Semantic memories (AIBrain) on SQLite and PostgreSQL: each user's memories with their
//! embeddings, history kept when a memory's content changes, tombstones for deletes, and a
//! per-user change sequence that sync cursors follow.
//!
//! Every change takes the owner's next sequence number under the owner's row in
//! `memory_owners` (SQLite: `BEGIN IMMEDIATE`), so a reader following `seq` never skips a
//! change that commits late. Vector search is pgvector HNSW (cosine) on PostgreSQL and an
//! exact scan over a per-owner in-memory matrix on SQLite ([`vectors`]); keyword search is
//! PostgreSQL full-text (English stemming and stop words) or SQLite FTS5 (Porter stemming,
//! stop words dropped from the query here).
//!
//! [`store`] holds the method bodies both backends share; `sqlite` and `postgres` hold what
//! each does its own way (row encoding, bulk insert, the searches, the vector backlog).

mod postgres;
mod query;
mod shared;
mod sqlite;
mod store;
mod vectors;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use self::postgres::PostgresMemories;

/// An insert carrying more vectors than this may leave them outside the vector index, to
/// [`MemoryStore::index_backlog`] (PostgreSQL: HNSW takes inserts at a few hundred a second).
pub const BACKLOG_FROM_VECTORS: usize = 100;
pub use self::query::{MAX_TERMS, STOP_WORDS, content_key, keyword_terms};
pub use self::sqlite::SqliteMemories;
use crate::error::StoreResult;

/// The stored times of an owner's oldest and newest vectors waiting for the vector index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogSpan {
    pub oldest: DateTime<Utc>,
    pub newest: DateTime<Utc>,
}

/// What a memory is about (AIBrain's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryType {
    Preference,
    Fact,
    Task,
    Project,
    Meta,
}

/// Where a memory applies (AIBrain's `scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryScope {
    UserGlobal,
    Session,
    Site,
    Conversation,
}

text_enum!(MemoryType { Preference => "preference", Fact => "fact", Task => "task", Project => "project", Meta => "meta" });
text_enum!(MemoryScope { UserGlobal => "user_global", Session => "session", Site => "site", Conversation => "conversation" });

/// One stored memory. `valid_to` is set on history rows: the content a memory had until an
/// update replaced it (`superseded_by` names the memory that carries on).
#[derive(Debug, Clone, PartialEq)]
pub struct Memory {
    pub id: String,
    pub owner: String,
    pub content: String,
    pub memory_type: MemoryType,
    pub scope: MemoryScope,
    pub source_url: Option<String>,
    pub source_platform: Option<String>,
    pub source_timestamp: Option<DateTime<Utc>>,
    pub source_conversation_id: Option<String>,
    pub confidence: Option<f64>,
    pub access_count: i64,
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub valid_from: DateTime<Utc>,
    pub valid_to: Option<DateTime<Utc>>,
    pub superseded_by: Option<String>,
    /// Where an ingested memory came from (conversation id, turn offsets, job id).
    pub provenance: Option<Value>,
    /// The owner's change sequence number of this memory's last change.
    pub seq: i64,
    /// Only filled by reads that ask for vectors.
    pub embedding: Option<Vec<f32>>,
}

/// A memory to insert. `id: None` gets a fresh UUID.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMemory {
    pub id: Option<String>,
    pub content: String,
    pub memory_type: MemoryType,
    pub scope: MemoryScope,
    pub source_url: Option<String>,
    pub source_platform: Option<String>,
    pub source_timestamp: Option<DateTime<Utc>>,
    pub source_conversation_id: Option<String>,
    pub confidence: Option<f64>,
    pub tags: Vec<String>,
    /// Kept from an import; now otherwise.
    pub created_at: Option<DateTime<Utc>>,
    pub provenance: Option<Value>,
    pub embedding: Option<Vec<f32>>,
}

/// Fields an update changes; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryPatch {
    pub content: Option<String>,
    pub memory_type: Option<MemoryType>,
    pub scope: Option<MemoryScope>,
    pub source_url: Option<Option<String>>,
    pub source_platform: Option<Option<String>>,
    pub source_timestamp: Option<Option<DateTime<Utc>>>,
    pub source_conversation_id: Option<Option<String>>,
    pub confidence: Option<Option<f64>>,
    pub tags: Option<Vec<String>>,
    pub provenance: Option<Option<Value>>,
    /// The new content's vector; with changed content and no vector the old one is dropped.
    pub embedding: Option<Vec<f32>>,
}

impl MemoryPatch {
    /// Whether applying this changes `memory` at all.
    pub fn changes(&self, memory: &Memory) -> bool {
        fn differs<T: PartialEq>(new: &Option<T>, old: &T) -> bool {
            new.as_ref().is_some_and(|new| new != old)
        }
        differs(&self.content, &memory.content)
            || differs(&self.memory_type, &memory.memory_type)
            || differs(&self.scope, &memory.scope)
            || differs(&self.source_url, &memory.source_url)
            || differs(&self.source_platform, &memory.source_platform)
            || differs(&self.source_timestamp, &memory.source_timestamp)
            || differs(&self.source_conversation_id, &memory.source_conversation_id)
            || differs(&self.confidence, &memory.confidence)
            || differs(&self.tags, &memory.tags)
            || differs(&self.provenance, &memory.provenance)
            || self.embedding.is_some()
    }
}

/// Which live memories a list or search considers. Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryFilter {
    pub memory_type: Option<MemoryType>,
    pub scope: Option<MemoryScope>,
    pub platform: Option<String>,
    /// Every one of these tags.
    pub tags_all: Vec<String>,
    /// At least one of these tags.
    pub tags_any: Vec<String>,
    /// `created_at` on or after.
    pub start: Option<DateTime<Utc>>,
    /// `created_at` on or before.
    pub end: Option<DateTime<Utc>>,
}

/// Where a list page starts: an offset, or after the last memory of the previous page
/// (newest first: `created_at` then `id`, both descending).
#[derive(Debug, Clone, PartialEq)]
pub enum ListFrom {
    Offset(i64),
    After { created_at: DateTime<Utc>, id: String },
}

/// One search hit: the memory and its score (cosine similarity, or a keyword rank where
/// higher is better).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredMemory {
    pub memory: Memory,
    pub score: f64,
}

/// One entry of a user's change feed.
#[derive(Debug, Clone, PartialEq)]
pub enum MemoryChange {
    Upserted(Box<Memory>),
    Deleted { id: String, seq: i64, deleted_at: DateTime<Utc> },
}

impl MemoryChange {
    pub fn seq(&self) -> i64 {
        match self {
            MemoryChange::Upserted(memory) => memory.seq,
            MemoryChange::Deleted { seq, .. } => *seq,
        }
    }
}

/// Where a change feed starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ChangesFrom {
    /// After this sequence number.
    Seq(i64),
    /// Changed strictly after this time (AIBrain's `updatedAfter`).
    UpdatedAfter(DateTime<Utc>),
}

/// A page of changes in sequence order. `cursor` is the seq to continue after.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangePage {
    pub changes: Vec<MemoryChange>,
    pub cursor: i64,
    pub has_more: bool,
}

/// What an insert did with each memory, in input order.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    Created(Box<Memory>),
    /// A memory with this id already exists for the owner; nothing was written.
    ExistingId(String),
}

/// How a deleted memory ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Deleted {
    pub id: String,
    pub seq: i64,
    pub deleted_at: DateTime<Utc>,
}

#[async_trait]
pub trait MemoryStore: Send + Sync {
    /// Inserts in one transaction, in order; an id the owner already has is reported and
    /// skipped. Vectors must all have the same length.
    async fn insert(&self, owner: &str, memories: Vec<NewMemory>) -> StoreResult<Vec<Inserted>>;

    /// A memory of `owner`'s, live or history; `with_vector` also reads its embedding.
    async fn get(&self, owner: &str, id: &str, with_vector: bool) -> StoreResult<Option<Memory>>;

    /// Applies `patch` to a live memory. When the content changes, the old version is kept
    /// as a history row (new id, `valid_to` now, `superseded_by` this id) first. `None` when
    /// the owner has no such live memory.
    async fn update(&self, owner: &str, id: &str, patch: MemoryPatch) -> StoreResult<Option<Memory>>;

    /// Deletes a live memory and its history, leaving a tombstone in the change feed.
    async fn delete(&self, owner: &str, id: &str) -> StoreResult<Option<Deleted>>;

    /// Live memories, newest first.
    async fn list(
        &self,
        owner: &str,
        filter: &MemoryFilter,
        from: &ListFrom,
        limit: i64,
    ) -> StoreResult<Vec<Memory>>;

    /// The versions a memory replaced, newest first.
    async fn history(&self, owner: &str, id: &str) -> StoreResult<Vec<Memory>>;

    /// Up to `limit` live memories with a vector, by cosine similarity to `vector`.
    async fn semantic(
        &self,
        owner: &str,
        vector: &[f32],
        filter: &MemoryFilter,
        limit: i64,
    ) -> StoreResult<Vec<ScoredMemory>>;

    /// Up to `limit` live memories matching any of `terms` (already free of stop words),
    /// best first by BM25 (SQLite) or `ts_rank` (PostgreSQL).
    async fn keyword(
        &self,
        owner: &str,
        terms: &[String],
        filter: &MemoryFilter,
        limit: i64,
    ) -> StoreResult<Vec<ScoredMemory>>;

    /// Counts one access of each memory (not a change: no seq, no `updated_at`).
    async fn record_access(&self, owner: &str, ids: &[String]) -> StoreResult<()>;

    /// Moves up to `limit` vectors that bulk inserts left outside the vector index into it
    /// (of `owner`, or of anyone), returning how many; `None`, moving nothing, while another
    /// caller is moving vectors (of any owner). Not a change: searches find pending vectors
    /// too, only more slowly. SQLite searches exactly and never has a backlog.
    async fn index_backlog(&self, owner: Option<&str>, limit: i64) -> StoreResult<Option<u64>>;

    /// How many of the owner's vectors wait outside the vector index.
    async fn backlog(&self, owner: &str) -> StoreResult<i64>;

    /// When the owner's oldest and newest vectors still outside the vector index were
    /// stored; `None` when none waits.
    async fn backlog_span(&self, owner: &str) -> StoreResult<Option<BacklogSpan>>;

    /// Changes of live memories and deletes, in sequence order.
    async fn changes(&self, owner: &str, from: ChangesFrom, limit: i64) -> StoreResult<ChangePage>;

    /// Live memories in id order after `after_id`, for export.
    async fn export_page(
        &self,
        owner: &str,
        after_id: Option<&str>,
        limit: i64,
        with_vectors: bool,
    ) -> StoreResult<Vec<Memory>>;

    /// The content keys ([`content_key`]) of `contents` that a live memory of `owner`'s has.
    async fn existing_contents(&self, owner: &str, contents: &[String]) -> StoreResult<Vec<String>>;

    /// How many live memories `owner` has.
    async fn count(&self, owner: &str) -> StoreResult<i64>;
}

/// A fresh memory id: a random UUID (v4 layout, from a ULID's randomness and time).
pub fn new_memory_id() -> String {
    let mut bytes = ulid::Ulid::generate().0.to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// The form of content that duplicate checks compare: lowercase, whitespace collapsed.
pub fn normalized_content(content: &str) -> String {
    content.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_uuids_and_differ() {
        let a = new_memory_id();
        let b = new_memory_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
        assert!(matches!(a.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
    }

    #[test]
    fn enums_round_trip_their_wire_names() {
        for t in MemoryType::ALL {
            assert_eq!(MemoryType::parse(t.as_str()), Some(*t));
        }
        for s in MemoryScope::ALL {
            assert_eq!(MemoryScope::parse(s.as_str()), Some(*s));
        }
        assert_eq!(MemoryScope::parse("global"), None);
    }

    #[test]
    fn normalised_content_ignores_case_and_spacing() {
        assert_eq!(normalized_content("  I like\n\tTea "), "i like tea");
    }
}
