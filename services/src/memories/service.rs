//! [`Memories`]: create, read, update, delete, import and the change feed, with embedding
//! on the way in and a change event on the way out.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use serde_json::{Value, json};
use storage::StoreError;
use storage::events::EventBus;
use storage::sql::memories::content_key;
use storage::sql::{
    ChangesFrom, Inserted, Memory, MemoryChange, MemoryChangePage, MemoryPatch, MemoryStore, NewMemory,
};

use crate::embed::{EmbedError, Embedder};

/// The event bus topic of `owner`'s memory changes.
pub fn changes_topic(owner: &str) -> String {
    format!("memories:{owner}")
}

const CURSOR_PREFIX: &str = "m1.";

/// The opaque sync cursor for a change sequence number.
pub fn encode_cursor(seq: i64) -> String {
    format!("{CURSOR_PREFIX}{seq}")
}

/// The sequence number in a cursor from [`encode_cursor`]; `None` for anything else.
pub fn decode_cursor(cursor: &str) -> Option<i64> {
    cursor.strip_prefix(CURSOR_PREFIX)?.parse().ok().filter(|seq: &i64| *seq >= 0)
}

#[derive(Debug, thiserror::Error)]
pub enum MemoriesError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No embedding model is configured or it failed: semantic work cannot be done.
    #[error("embeddings unavailable: {0}")]
    EmbeddingsUnavailable(String),
    /// A vector a client sent does not fit (wrong length, not finite).
    #[error("{0}")]
    InvalidVector(String),
    /// Extracting facts from a conversation failed (the LLM did not answer usably).
    #[error("fact extraction failed: {0}")]
    Extraction(String),
    /// The job doing the work was cancelled.
    #[error("cancelled")]
    Cancelled,
}

impl From<EmbedError> for MemoriesError {
    fn from(e: EmbedError) -> Self {
        MemoriesError::EmbeddingsUnavailable(e.to_string())
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportOutcome {
    pub imported: usize,
    /// Items whose client id the user already had, or (with deduplication) whose content.
    pub skipped: usize,
    pub ids: Vec<String>,
}

/// The semantic memory service of one process.
#[derive(Clone)]
pub struct Memories {
    pub store: Arc<dyn MemoryStore>,
    events: Arc<dyn EventBus>,
    embedder: Option<Embedder>,
}

impl Memories {
    pub fn new(store: Arc<dyn MemoryStore>, events: Arc<dyn EventBus>, embedder: Option<Embedder>) -> Self {
        Self { store, events, embedder }
    }

    pub fn embedder(&self) -> Option<&Embedder> {
        self.embedder.as_ref()
    }

    /// The length of this process's vectors (`None` without a model).
    pub fn dimensions(&self) -> Option<usize> {
        self.embedder.as_ref().map(Embedder::dimensions)
    }

    /// Checks a client's vector: finite, of the model's length when a model is configured,
    /// and normalised to unit length (cosine search assumes it).
    pub fn check_vector(&self, vector: Vec<f32>) -> Result<Vec<f32>, MemoriesError> {
        if vector.is_empty() || vector.len() > 4096 {
            return Err(MemoriesError::InvalidVector("must have 1 to 4096 numbers".into()));
        }
        // A remote model's length is 0 until it has answered once.
        if let Some(dims) = self.dimensions().filter(|dims| *dims != 0 && *dims != vector.len()) {
            return Err(MemoriesError::InvalidVector(format!(
                "has {} numbers; this server's model makes vectors of {dims}",
                vector.len()
            )));
        }
        if vector.iter().any(|x| !x.is_finite()) {
            return Err(MemoriesError::InvalidVector("must hold finite numbers only".into()));
        }
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm == 0.0 {
            return Err(MemoriesError::InvalidVector("must not be all zeros".into()));
        }
        Ok(vector.into_iter().map(|x| x / norm).collect())
    }

    /// Embeds texts with the configured model.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, MemoriesError> {
        let embedder = self.require_embedder()?;
        Ok(embedder.embed(texts).await?)
    }

    pub async fn embed_query(&self, text: &str) -> Result<Arc<[f32]>, MemoriesError> {
        let embedder = self.require_embedder()?;
        Ok(embedder.embed_query(text).await?)
    }

    fn require_embedder(&self) -> Result<&Embedder, MemoriesError> {
        self.embedder.as_ref().ok_or_else(|| {
            MemoriesError::EmbeddingsUnavailable(
                "no embedding model: run scripts/install-model.sh (ENGRAM_MODEL_DIR) or set EMBEDDING_BASE_URL".into(),
            )
        })
    }

    /// Creates one memory. With `embed` and no vector given, the content is embedded first
    /// (a model that is missing leaves the memory without a vector rather than failing).
    pub async fn create(
        &self,
        owner: &str,
        mut new: NewMemory,
        embed: bool,
    ) -> Result<Memory, MemoriesError> {
        if embed && new.embedding.is_none() && self.embedder.is_some() {
            new.embedding = Some(self.embed(vec![new.content.clone()]).await?.remove(0));
        }
        let outcome = self.store.insert(owner, vec![new]).await?.remove(0);
        match outcome {
            Inserted::Created(memory) => {
                let memory = Memory { embedding: None, ..*memory };
                self.publish(owner, "MEMORY_CREATED", Some(&memory), &memory.id, memory.seq).await;
                Ok(memory)
            }
            Inserted::ExistingId(id) => self.store.get(owner, &id, false).await?.ok_or_else(|| {
                StoreError::backend("database", anyhow::anyhow!("memory {id} vanished")).into()
            }),
        }
    }

    /// Updates a live memory; changed content is re-embedded unless the patch brings a vector.
    pub async fn update(
        &self,
        owner: &str,
        id: &str,
        mut patch: MemoryPatch,
    ) -> Result<Option<Memory>, MemoriesError> {
        let Some(current) = self.store.get(owner, id, false).await?.filter(|m| m.valid_to.is_none()) else {
            return Ok(None);
        };
        if let Some(content) = &patch.content
            && patch.embedding.is_none()
            && self.embedder.is_some()
            && *content != current.content
        {
            patch.embedding = Some(self.embed(vec![content.clone()]).await?.remove(0));
        }
        let updated = self.store.update(owner, id, patch).await?;
        // An update that changed nothing keeps the memory's sequence number and is no event.
        if let Some(memory) = &updated
            && memory.seq != current.seq
        {
            self.publish(owner, "MEMORY_UPDATED", Some(memory), &memory.id, memory.seq).await;
        }
        Ok(updated)
    }

    /// Deletes a live memory; `false` when there was none.
    pub async fn delete(&self, owner: &str, id: &str) -> Result<bool, MemoriesError> {
        let Some(deleted) = self.store.delete(owner, id).await? else { return Ok(false) };
        self.publish(owner, "MEMORY_DELETED", None, &deleted.id, deleted.seq).await;
        Ok(true)
    }

    /// Imports memories in one transaction per call. Items without a vector are embedded in
    /// batches when `embed` is set and a model is configured; with `deduplicate`, items
    /// whose content the user already has (or that repeat within the import) are skipped.
    pub async fn import(
        &self,
        owner: &str,
        items: Vec<NewMemory>,
        deduplicate: bool,
        embed: bool,
    ) -> Result<ImportOutcome, MemoriesError> {
        let mut skipped = 0;
        let items = if deduplicate {
            let contents: Vec<String> = items.iter().map(|m| m.content.clone()).collect();
            let mut seen: HashSet<String> =
                self.store.existing_contents(owner, &contents).await?.into_iter().collect();
            let before = items.len();
            let kept: Vec<NewMemory> =
                items.into_iter().filter(|m| seen.insert(content_key(&m.content))).collect();
            skipped += before - kept.len();
            kept
        } else {
            items
        };
        let mut items = items;
        if embed && self.embedder.is_some() {
            let missing: Vec<usize> = (0..items.len()).filter(|&i| items[i].embedding.is_none()).collect();
            let texts = missing.iter().map(|&i| items[i].content.clone()).collect();
            for (i, vector) in missing.into_iter().zip(self.embed(texts).await?) {
                items[i].embedding = Some(vector);
            }
        }
        let mut outcome = ImportOutcome { skipped, ..Default::default() };
        let mut events = Vec::new();
        for inserted in self.store.insert(owner, items).await? {
            match inserted {
                Inserted::Created(memory) => {
                    let memory = Memory { embedding: None, ..*memory };
                    outcome.imported += 1;
                    outcome.ids.push(memory.id.clone());
                    events.push(event_payload("MEMORY_CREATED", Some(&memory), &memory.id, memory.seq));
                }
                Inserted::ExistingId(_) => outcome.skipped += 1,
            }
        }
        self.publish_all(owner, events).await;
        Ok(outcome)
    }

    /// The user's changes after a cursor or time, deletes included.
    pub async fn changes(
        &self,
        owner: &str,
        from: ChangesFrom,
        limit: i64,
    ) -> Result<MemoryChangePage, MemoriesError> {
        Ok(self.store.changes(owner, from, limit).await?)
    }

    async fn publish(&self, owner: &str, kind: &str, memory: Option<&Memory>, id: &str, seq: i64) {
        self.publish_all(owner, vec![event_payload(kind, memory, id, seq)]).await;
    }

    /// Change events are hints: a device that misses one catches up through the change
    /// feed, so a bus failure is logged, not returned.
    async fn publish_all(&self, owner: &str, payloads: Vec<Value>) {
        if payloads.is_empty() {
            return;
        }
        let topic = changes_topic(owner);
        let events = payloads
            .into_iter()
            .map(|payload| storage::events::Event { topic: topic.clone(), payload })
            .collect();
        if let Err(e) = self.events.publish_many(events).await {
            tracing::warn!(owner, error = %e, "could not publish memory change events");
        }
    }
}

fn event_payload(kind: &str, memory: Option<&Memory>, id: &str, seq: i64) -> Value {
    json!({
        "type": kind,
        "id": id,
        "memory": memory.map(memory_json),
        "cursor": encode_cursor(seq),
        "timestamp": Utc::now(),
    })
}

/// A memory as AIBrain's clients read it (camelCase; the vector only when loaded).
pub fn memory_json(memory: &Memory) -> Value {
    let mut value = json!({
        "id": memory.id,
        "userId": memory.owner,
        "content": memory.content,
        "type": memory.memory_type.as_str(),
        "scope": memory.scope.as_str(),
        "sourceUrl": memory.source_url,
        "sourcePlatform": memory.source_platform,
        "sourceTimestamp": memory.source_timestamp,
        "sourceConversationId": memory.source_conversation_id,
        "createdAt": memory.created_at,
        "updatedAt": memory.updated_at,
        "confidence": memory.confidence,
        "accessCount": memory.access_count,
        "tags": memory.tags,
        "validFrom": memory.valid_from,
        "validTo": memory.valid_to,
        "supersededBy": memory.superseded_by,
        "provenance": memory.provenance,
    });
    if let Some(vector) = &memory.embedding {
        value["embedding"] = json!(vector);
    }
    value
}

/// A change as the sync feed reports it.
pub fn change_json(change: &MemoryChange) -> Value {
    match change {
        MemoryChange::Upserted(memory) => {
            let mut value = memory_json(memory);
            value["deleted"] = json!(false);
            value["cursor"] = json!(encode_cursor(memory.seq));
            value
        }
        MemoryChange::Deleted { id, seq, deleted_at } => json!({
            "id": id,
            "deleted": true,
            "deletedAt": deleted_at,
            "updatedAt": deleted_at,
            "cursor": encode_cursor(*seq),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        assert_eq!(decode_cursor("42"), None);
        assert_eq!(decode_cursor("m1.-1"), None);
        assert_eq!(decode_cursor("m1.x"), None);
    }
}
