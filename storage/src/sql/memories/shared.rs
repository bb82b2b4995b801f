//! What both backends do the same way in Rust: turning a new memory or a patch into the
//! rows to write, and cutting a change feed into a page with its cursor.

use chrono::{DateTime, Utc};

use super::{ChangePage, ChangesFrom, Memory, MemoryChange, MemoryPatch, NewMemory, new_memory_id};

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
