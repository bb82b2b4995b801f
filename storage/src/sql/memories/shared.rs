//! What both backends do the same way: the columns they read and how a row becomes a
//! [`Memory`], turning a new memory or a patch into the rows to write, and cutting a change
//! feed into a page with its cursor.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::FromRow;

use super::{
    ChangePage, ChangesFrom, Memory, MemoryChange, MemoryPatch, MemoryScope, MemoryType, NewMemory,
    new_memory_id,
};
use crate::error::{StoreError, StoreResult};
use crate::sql::millis::from_millis;

/// The columns of [`RowColumns`] plus `tags` and `provenance`, on the alias `m`, as a literal
/// for `concat!`; each statement adds its own `embedding` expression. `access_count` adds
/// the reads counted since the row was written (`memory_reads`).
macro_rules! memory_columns {
    () => {
        "m.owner, m.id, m.content, m.memory_type, m.scope, m.source_url, \
         m.source_platform, m.source_timestamp, m.source_conversation_id, m.confidence, \
         m.access_count + COALESCE((SELECT r.reads FROM memory_reads r WHERE r.owner = m.owner AND r.id = m.id), 0) \
         AS access_count, m.tags, m.created_at, m.updated_at, m.valid_from, m.valid_to, m.superseded_by, \
         m.provenance, m.seq"
    };
}

/// `SELECT` of the memory columns and `$embedding` (a literal) from `memories m`, then `$rest`.
macro_rules! select_memories {
    ($embedding:literal, $rest:literal) => {
        concat!(
            "SELECT ",
            $crate::sql::memories::shared::memory_columns!(),
            ", ",
            $embedding,
            " AS embedding FROM memories m ",
            $rest
        )
    };
}

pub(super) use {memory_columns, select_memories};

/// Takes `$2` fresh sequence numbers for owner `$1`, returning the last of them.
pub(super) const NEXT_SEQS: &str = "INSERT INTO memory_owners (owner, seq) VALUES ($1, $2) \
     ON CONFLICT (owner) DO UPDATE SET seq = memory_owners.seq + excluded.seq RETURNING seq";

/// Records the delete of memory `$2` of owner `$1` at seq `$3`, time `$4`.
pub(super) const UPSERT_TOMBSTONE: &str = "INSERT INTO memory_tombstones (owner, id, seq, deleted_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (owner, id) DO UPDATE SET seq = excluded.seq, deleted_at = excluded.deleted_at";

/// The columns both backends store alike; the backend's row adds tags, provenance and the
/// vector in its own encoding.
#[derive(FromRow)]
pub(super) struct RowColumns {
    owner: String,
    pub(super) id: String,
    content: String,
    memory_type: String,
    scope: String,
    source_url: Option<String>,
    source_platform: Option<String>,
    source_timestamp: Option<i64>,
    source_conversation_id: Option<String>,
    confidence: Option<f64>,
    access_count: i64,
    created_at: i64,
    updated_at: i64,
    valid_from: i64,
    valid_to: Option<i64>,
    superseded_by: Option<String>,
    seq: i64,
}

/// A stored value that does not decode: the database holds something Engram never wrote.
pub(super) fn corrupt(what: String) -> StoreError {
    StoreError::backend("database", anyhow::anyhow!(what))
}

impl RowColumns {
    pub(super) fn into_memory(
        self,
        tags: Vec<String>,
        provenance: Option<Value>,
        embedding: Option<Vec<f32>>,
    ) -> StoreResult<Memory> {
        Ok(Memory {
            memory_type: MemoryType::parse(&self.memory_type).ok_or_else(|| {
                corrupt(format!("memory {} has unknown type {:?}", self.id, self.memory_type))
            })?,
            scope: MemoryScope::parse(&self.scope)
                .ok_or_else(|| corrupt(format!("memory {} has unknown scope {:?}", self.id, self.scope)))?,
            tags,
            provenance,
            embedding,
            id: self.id,
            owner: self.owner,
            content: self.content,
            source_url: self.source_url,
            source_platform: self.source_platform,
            source_timestamp: self.source_timestamp.map(from_millis),
            source_conversation_id: self.source_conversation_id,
            confidence: self.confidence,
            access_count: self.access_count,
            created_at: from_millis(self.created_at),
            updated_at: from_millis(self.updated_at),
            valid_from: from_millis(self.valid_from),
            valid_to: self.valid_to.map(from_millis),
            superseded_by: self.superseded_by,
            seq: self.seq,
        })
    }
}

/// `$1` owner, `$2` seq, `$3` limit: the owner's tombstones after a seq.
pub(super) const TOMBSTONES_AFTER_SEQ: &str =
    "SELECT id, seq, deleted_at FROM memory_tombstones WHERE owner = $1 AND seq > $2 ORDER BY seq LIMIT $3";
/// `$1` owner, `$2` time, `$3` limit: the owner's tombstones laid after a time.
pub(super) const TOMBSTONES_DELETED_AFTER: &str = "SELECT id, seq, deleted_at FROM memory_tombstones WHERE owner = $1 AND deleted_at > $2 ORDER BY seq LIMIT $3";

/// Upserted memories and tombstone rows `(id, seq, deleted_at)` as one list of changes.
pub(super) fn change_list(upserts: Vec<Memory>, tombstones: Vec<(String, i64, i64)>) -> Vec<MemoryChange> {
    let deletes = tombstones.into_iter().map(|(id, seq, at)| MemoryChange::Deleted {
        id,
        seq,
        deleted_at: from_millis(at),
    });
    upserts.into_iter().map(|m| MemoryChange::Upserted(Box::new(m))).chain(deletes).collect()
}

/// The memory a [`NewMemory`] becomes, stamped with `seq` and `now`.
pub(super) fn materialise(owner: &str, new: NewMemory, seq: i64, now: DateTime<Utc>) -> Memory {
    let created_at = new.created_at.unwrap_or(now);
    Memory {
        id: new.id.unwrap_or_else(new_memory_id),
        owner: owner.to_string(),
        content: new.content,
        memory_type: new.memory_type,
        scope: new.scope,
        source_url: new.source_url,
        source_platform: new.source_platform,
        source_timestamp: new.source_timestamp,
        source_conversation_id: new.source_conversation_id,
        confidence: new.confidence,
        access_count: 0,
        tags: new.tags,
        created_at,
        updated_at: now,
        valid_from: created_at,
        valid_to: None,
        superseded_by: None,
        provenance: new.provenance,
        seq,
        embedding: new.embedding,
    }
}

/// The live memory after `patch`, and the history row keeping its old content if that changed.
pub(super) fn apply_patch(
    current: &Memory,
    patch: MemoryPatch,
    seq: i64,
    now: DateTime<Utc>,
) -> (Memory, Option<Memory>) {
    let content_changed = patch.content.as_ref().is_some_and(|c| *c != current.content);
    let history = content_changed.then(|| Memory {
        id: new_memory_id(),
        valid_to: Some(now),
        superseded_by: Some(current.id.clone()),
        seq,
        embedding: None,
        ..current.clone()
    });
    let mut next = current.clone();
    if let Some(content) = patch.content {
        next.content = content;
    }
    if let Some(t) = patch.memory_type {
        next.memory_type = t;
    }
    if let Some(s) = patch.scope {
        next.scope = s;
    }
    if let Some(v) = patch.source_url {
        next.source_url = v;
    }
    if let Some(v) = patch.source_platform {
        next.source_platform = v;
    }
    if let Some(v) = patch.source_timestamp {
        next.source_timestamp = v;
    }
    if let Some(v) = patch.source_conversation_id {
        next.source_conversation_id = v;
    }
    if let Some(v) = patch.confidence {
        next.confidence = v;
    }
    if let Some(v) = patch.tags {
        next.tags = v;
    }
    if let Some(v) = patch.provenance {
        next.provenance = v;
    }
    match patch.embedding {
        Some(vector) => next.embedding = Some(vector),
        None if content_changed => next.embedding = None,
        None => {}
    }
    if content_changed {
        next.valid_from = now;
    }
    next.updated_at = now;
    next.seq = seq;
    (next, history)
}

/// Merges upserts and deletes (each already in seq order, at most `limit + 1` of each)
/// into one page of at most `limit`, with the cursor to continue from.
pub(super) fn page_of(
    mut changes: Vec<MemoryChange>,
    from: ChangesFrom,
    current: i64,
    limit: i64,
) -> ChangePage {
    changes.sort_by_key(MemoryChange::seq);
    let limit = usize::try_from(limit).unwrap_or(0);
    let has_more = changes.len() > limit;
    changes.truncate(limit);
    let cursor = match (changes.last(), has_more, from) {
        (Some(last), true, _) => last.seq(),
        // Everything up to the snapshot's seq has been seen.
        (_, false, _) => current.max(changes.last().map_or(0, MemoryChange::seq)),
        (None, true, ChangesFrom::Seq(seq)) => seq,
        (None, true, ChangesFrom::UpdatedAfter(_)) => 0,
    };
    ChangePage { changes, cursor, has_more }
}
