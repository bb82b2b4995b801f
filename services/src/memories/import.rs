//! Import: memories a client already has (AIBrain's IndexedDB migration), checked by the API,
//! every item given an id there so a retried import skips what an earlier attempt stored.
//! Stored in chunks, each embedded (when it lacks vectors) and inserted in one transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use storage::sql::{MemoryScope, MemoryType, NewMemory};

use super::{ImportOutcome, Memories, MemoriesError};

/// Items embedded and inserted together, when some need embedding (a chunk's progress is
/// reported after its embedding, seconds to minutes on a CPU).
pub const IMPORT_CHUNK: usize = 1000;
/// Items inserted together when every one brings its vector: one transaction per inline
/// import request.
pub const VECTOR_IMPORT_CHUNK: usize = 2000;

/// One checked import item, as the `import_memories` job reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportItem {
    pub id: String,
    pub content: String,
    #[serde(rename = "type")]
    pub memory_type: MemoryType,
    pub scope: MemoryScope,
    pub source_url: Option<String>,
    pub source_platform: Option<String>,
    pub source_timestamp: Option<DateTime<Utc>>,
    pub source_conversation_id: Option<String>,
    pub confidence: Option<f64>,
    pub tags: Vec<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub embedding: Option<Vec<f32>>,
}

impl From<ImportItem> for NewMemory {
    fn from(item: ImportItem) -> Self {
        NewMemory {
            id: Some(item.id),
            content: item.content,
            memory_type: item.memory_type,
            scope: item.scope,
            source_url: item.source_url,
            source_platform: item.source_platform,
            source_timestamp: item.source_timestamp,
            source_conversation_id: item.source_conversation_id,
            confidence: item.confidence,
            tags: item.tags,
            created_at: item.created_at,
            provenance: Some(serde_json::json!({"source": "import"})),
            embedding: item.embedding,
        }
    }
}

impl Memories {
    /// Imports `items` chunk by chunk, calling `progress(done, total)` after each chunk.
    pub async fn import_in_chunks(
        &self,
        owner: &str,
        items: Vec<ImportItem>,
        deduplicate: bool,
        mut progress: impl AsyncProgress,
    ) -> Result<ImportOutcome, MemoriesError> {
        let total = items.len();
        let chunk_size = if self.embedder().is_some() && items.iter().any(|item| item.embedding.is_none()) {
            IMPORT_CHUNK
        } else {
            VECTOR_IMPORT_CHUNK
        };
        let mut outcome = ImportOutcome::default();
        let mut items = items.into_iter().map(NewMemory::from).peekable();
        let mut done = 0;
        while items.peek().is_some() {
            let chunk: Vec<NewMemory> = items.by_ref().take(chunk_size).collect();
            done += chunk.len();
            let part = self.import(owner, chunk, deduplicate, true).await?;
            outcome.imported += part.imported;
            outcome.skipped += part.skipped;
            outcome.ids.extend(part.ids);
            progress.report(done, total).await?;
        }
        Ok(outcome)
    }
}

/// Told how far an import got; may stop it (a cancelled job).
#[async_trait::async_trait]
pub trait AsyncProgress: Send {
    async fn report(&mut self, done: usize, total: usize) -> Result<(), MemoriesError>;
}

/// Progress nobody listens to.
pub struct NoProgress;

#[async_trait::async_trait]
impl AsyncProgress for NoProgress {
    async fn report(&mut self, _done: usize, _total: usize) -> Result<(), MemoriesError> {
        Ok(())
    }
}
