//! Semantic memory jobs, acting for the job's owner: `ingest_conversation` (extract facts from
//! a conversation and add, update or skip each), `import_memories` (a large import, its
//! checked items kept in the blob store under `imports/` until the job has stored them) and
//! `index_memory_vectors` (moving vectors a bulk insert left outside the vector index into it);
//! and how an import begins (`start_import`: stored in the request, or staged for a job).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use services::llm::LlmClient;
use services::memories::import::{AsyncProgress, ImportItem, NoProgress};
use services::memories::ingest::{Action, IngestContext};
use services::memories::{ImportOutcome, Memories, MemoriesError, memory_json};
use storage::StoreError;
use storage::blob::{BlobKey, BlobStore, Condition};
use storage::sql::BacklogSpan;

use super::SYSTEM_OWNER;
use crate::context::JobContext;
use crate::engine::{JobEngine, Requester, Submit, SubmitError};
use crate::error::JobError;
use crate::kind::{Access, Kind, Policy};

fn job_error(e: MemoriesError) -> JobError {
    match e {
        MemoriesError::InvalidVector(message) => JobError::Permanent(message),
        MemoriesError::Cancelled => JobError::Cancelled,
        other => JobError::Failed(other.to_string()),
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestPayload {
    pub conversation_text: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub conversation_id: Option<String>,
}

pub struct IngestConversation {
    pub memories: Arc<Memories>,
    pub llm: Option<Arc<LlmClient>>,
}

#[async_trait]
impl Kind for IngestConversation {
    type Payload = IngestPayload;
    const NAME: &'static str = "ingest_conversation";
    const ACCESS: Access = Access::Tenant;

    fn policy(&self) -> Policy {
        Policy { timeout: Duration::from_secs(300), max_attempts: 3, priority: 1, ..Policy::default() }
    }

    async fn run(&self, payload: IngestPayload, ctx: &JobContext) -> Result<Value, JobError> {
        let context = IngestContext {
            url: payload.url,
            platform: payload.platform,
            conversation_id: payload.conversation_id,
            job_id: Some(ctx.job_id().to_string()),
        };
        let extractor = if self.llm.is_some() { "the LLM" } else { "the rule-based extractor" };
        ctx.progress(10, format!("extracting facts with {extractor}")).await?;
        let decisions = self
            .memories
            .ingest(ctx.owner(), &payload.conversation_text, &context, self.llm.as_deref())
            .await
            .map_err(job_error)?;
        let count = |action| decisions.iter().filter(|d| d.action == action).count();
        let (added, updated, skipped) =
            (count(Action::Added), count(Action::Updated), count(Action::Skipped));
        for decision in &decisions {
            ctx.info(format!("{:?}: {} ({})", decision.action, decision.content, decision.reason));
        }
        let stored: Vec<Value> = decisions
            .iter()
            .filter(|d| d.action != Action::Skipped)
            .filter_map(|d| d.memory.as_ref().map(memory_json))
            .collect();
        Ok(json!({
            "success": true,
            "count": stored.len(),
            "memories": stored,
            "message": format!(
                "Extracted {} facts: {added} added, {updated} updated, {skipped} skipped as duplicates",
                decisions.len()
            ),
            "decisions": decisions,
        }))
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportPayload {
    /// Where the API put the checked items (a JSON array of `ImportItem`).
    pub items_key: String,
    pub total: usize,
    #[serde(default)]
    pub deduplicate: bool,
}

pub struct ImportMemories(pub Arc<Memories>);

/// The blob key an import's items are kept under until its job is done: under a folder of
/// the owner's, so a job can only read imports of its own owner.
pub fn import_items_key(owner: &str, name: &str) -> String {
    format!("{}{name}.json", owner_imports(owner))
}

fn owner_imports(owner: &str) -> String {
    use sha2::Digest;
    format!("imports/{}/", &hex::encode(sha2::Sha256::digest(owner.as_bytes()))[..32])
}

/// Imports up to this size, needing at most `INLINE_EMBEDS` embeddings, run in the request.
const INLINE_ITEMS: usize = 2_000;
const INLINE_EMBEDS: usize = 64;

/// Inline imports of one owner within the same window of this many seconds share one
/// indexing job (see [`backlog_indexing`]).
const INDEX_WINDOW_SECS: i64 = 10;

/// How an import of checked items is run.
#[derive(Debug)]
enum ImportPlan {
    /// Small enough to store in the request (then [`backlog_indexing`] when vectors wait).
    Inline(Vec<ImportItem>),
    /// An `import_memories` job over the items [`stage_import`] stored.
    Job(Vec<ImportItem>),
}

/// Inline for small imports (at most 2,000 items needing at most 64 local embeddings), unless
/// the client asked not to wait; a job otherwise.
fn plan_import(memories: &Memories, items: Vec<ImportItem>, prefers_async: bool) -> ImportPlan {
    let to_embed = if memories.embedder().is_some() {
        items.iter().filter(|i| i.embedding.is_none()).count()
    } else {
        0
    };
    if items.len() <= INLINE_ITEMS && to_embed <= INLINE_EMBEDS && !prefers_async {
        ImportPlan::Inline(items)
    } else {
        ImportPlan::Job(items)
    }
}

/// How an import began.
#[derive(Debug)]
pub enum ImportStart {
    /// Stored in the request.
    Stored(ImportOutcome),
    /// Staged for an `import_memories` job, whose payload this is: the caller submits it.
    Staged(ImportPayload),
}

/// Why an import could not begin.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Memories(#[from] MemoriesError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
}

impl From<StoreError> for ImportError {
    fn from(e: StoreError) -> Self {
        ImportError::Memories(MemoriesError::Store(e))
    }
}

/// Begins an import of `owner`'s checked items: a small one (see [`plan_import`]) is stored
/// now, with an indexing job for any vectors it left outside the vector index; a large one,
/// or one whose client asked not to wait, is staged for an `import_memories` job.
pub async fn start_import(
    engine: &JobEngine,
    memories: &Memories,
    blobs: &dyn BlobStore,
    owner: &str,
    items: Vec<ImportItem>,
    deduplicate: bool,
    prefers_async: bool,
) -> Result<ImportStart, ImportError> {
    match plan_import(memories, items, prefers_async) {
        ImportPlan::Inline(items) => {
            let outcome = memories.import_in_chunks(owner, items, deduplicate, NoProgress).await?;
            if memories.store.backlog_span(owner).await?.is_some() {
                engine.submit(backlog_indexing(owner, Utc::now())).await?;
            }
            Ok(ImportStart::Stored(outcome))
        }
        ImportPlan::Job(items) => {
            Ok(ImportStart::Staged(stage_import(blobs, owner, &items, deduplicate).await?))
        }
    }
}

/// Stores `items` where an `import_memories` job of `owner` reads them; its payload.
async fn stage_import(
    blobs: &dyn BlobStore,
    owner: &str,
    items: &[ImportItem],
    deduplicate: bool,
) -> Result<ImportPayload, StoreError> {
    let key = import_items_key(owner, &ulid::Ulid::generate().to_string());
    let bytes = serde_json::to_vec(items).map_err(|e| StoreError::backend("blob store", e))?;
    blobs.put(&BlobKey::parse(&key)?, bytes.into(), Condition::None).await?;
    Ok(ImportPayload { items_key: key, total: items.len(), deduplicate })
}

/// The `index_memory_vectors` job that indexes what an inline import of `owner` left outside
/// the vector index: one per owner and window, run [`IMPORT_QUIET`] after the window ends, so a
/// client importing batch after batch is not slowed by index inserts in between (a job that
/// still finds the owner importing defers to the next window's; the upkeep schedule's sweep
/// catches any this misses). Submitting it twice in a window is a no-op (idempotency key).
fn backlog_indexing(owner: &str, now: DateTime<Utc>) -> Submit {
    let window = now.timestamp() / INDEX_WINDOW_SECS;
    let quiet = IMPORT_QUIET.as_secs() as i64;
    let mut submit = Submit::of::<IndexMemoryVectors>(&IndexVectorsPayload {}, owner, Requester::Engram);
    submit.run_at = DateTime::from_timestamp((window + 1) * INDEX_WINDOW_SECS + quiet + 1, 0);
    submit.idempotency_key = Some(format!("{}:{window}", IndexMemoryVectors::NAME));
    submit
}

struct JobProgress<'a>(&'a JobContext);

#[async_trait]
impl AsyncProgress for JobProgress<'_> {
    async fn report(&mut self, done: usize, total: usize) -> Result<(), MemoriesError> {
        let percent = (done * 100 / total.max(1)).min(99) as i32;
        self.0
            .progress(percent, format!("{done} of {total} stored"))
            .await
            .map_err(|_| MemoriesError::Cancelled)
    }
}

#[async_trait]
impl Kind for ImportMemories {
    type Payload = ImportPayload;
    const NAME: &'static str = "import_memories";
    const ACCESS: Access = Access::Tenant;

    fn policy(&self) -> Policy {
        Policy { timeout: Duration::from_secs(3600), max_attempts: 3, ..Policy::default() }
    }

    async fn run(&self, payload: ImportPayload, ctx: &JobContext) -> Result<Value, JobError> {
        if !payload.items_key.starts_with(&owner_imports(ctx.owner())) {
            return Err(JobError::Permanent("items_key: must name an import of this job's owner".into()));
        }
        let key = BlobKey::parse(&payload.items_key).map_err(|e| JobError::Permanent(e.to_string()))?;
        let blobs = ctx.backends().blobs.clone();
        let Some(blob) = blobs.get(&key).await.map_err(|e| JobError::Failed(e.to_string()))? else {
            return Err(JobError::Permanent(format!("the import's items ({}) are gone", payload.items_key)));
        };
        let items: Vec<ImportItem> = serde_json::from_slice(&blob.body)
            .map_err(|e| JobError::Permanent(format!("the import's items do not parse: {e}")))?;
        ctx.info(format!("importing {} memories", items.len()));
        let outcome = self
            .0
            .import_in_chunks(ctx.owner(), items, payload.deduplicate, JobProgress(ctx))
            .await
            .map_err(job_error)?;
        if let Err(e) = blobs.delete(&key, Condition::None).await {
            ctx.warn(format!("could not remove the import's items {}: {e}", payload.items_key));
        }
        ctx.info(format!("imported {}, skipped {}", outcome.imported, outcome.skipped));
        let mut result = index_owner_then_everyone(&self.0, ctx.owner(), ctx).await?;
        result["success"] = json!(true);
        result["imported"] = json!(outcome.imported);
        result["skipped"] = json!(outcome.skipped);
        result["total"] = json!(payload.total);
        Ok(result)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexVectorsPayload {}

/// Drains the vector backlog: the owner's, or everyone's when the platform runs it (the
/// schedule catching what a failed job left).
///
/// An owner's job that finds the owner still importing (a vector stored within
/// [`IMPORT_QUIET`]) leaves the backlog alone: HNSW inserts would take the cores the import
/// is using, and the import's later requests queue jobs of their own, run after them. A
/// backlog whose oldest vector has waited [`MAX_INDEX_DEFERRAL`] is drained regardless, so
/// imports that never pause cannot leave searches scanning an ever larger backlog.
pub struct IndexMemoryVectors(pub Arc<Memories>);

/// An owner is taken to be importing while a vector went into the backlog this recently.
/// Whoever queues an indexing job runs it at least this long after the import's last request.
pub const IMPORT_QUIET: Duration = Duration::from_secs(3);
/// The longest a vector waits for the index while its owner keeps importing.
pub(super) const MAX_INDEX_DEFERRAL: Duration = Duration::from_secs(60);

#[async_trait]
impl Kind for IndexMemoryVectors {
    type Payload = IndexVectorsPayload;
    const NAME: &'static str = "index_memory_vectors";
    const ACCESS: Access = Access::Tenant;

    fn policy(&self) -> Policy {
        // Each batch commits, so a timed-out attempt leaves less for the next.
        Policy { timeout: Duration::from_secs(1800), ..Policy::default() }
    }

    async fn run(&self, _payload: IndexVectorsPayload, ctx: &JobContext) -> Result<Value, JobError> {
        let owner = (ctx.owner() != SYSTEM_OWNER).then(|| ctx.owner());
        if let Some(owner) = owner
            && let Some(span) =
                self.0.store.backlog_span(owner).await.map_err(|e| JobError::Failed(e.to_string()))?
            && defers_indexing(span, Utc::now())
        {
            ctx.info("the owner is still importing: left to the indexing job queued after the import");
            return Ok(json!({"indexed": 0, "deferred": true}));
        }
        match owner {
            Some(owner) => index_owner_then_everyone(&self.0, owner, ctx).await,
            None => {
                let drained = index_vectors(&self.0, None, ctx).await?;
                Ok(json!({"indexed": drained.indexed, "left_to_another_drainer": drained.busy}))
            }
        }
    }
}

/// Whether an owner's indexing job finding `span` at `now` leaves it for later.
fn defers_indexing(span: BacklogSpan, now: DateTime<Utc>) -> bool {
    // A time ahead of `now` (another process's clock) counts as just now.
    let age = |at: DateTime<Utc>| (now - at).to_std().unwrap_or_default();
    age(span.newest) < IMPORT_QUIET && age(span.oldest) < MAX_INDEX_DEFERRAL
}

/// Vectors moved into the index per transaction.
const INDEX_BATCH: i64 = 500;

/// Moves the vectors of `owner` (or of everyone) into the index. Stops early, saying so,
/// when another drainer holds the index: that one goes on to everyone's backlog after its own.
async fn index_vectors(
    memories: &Memories,
    owner: Option<&str>,
    ctx: &JobContext,
) -> Result<Drained, JobError> {
    let mut drained = Drained::default();
    loop {
        ctx.check_cancelled()?;
        let moved = memories
            .store
            .index_backlog(owner, INDEX_BATCH)
            .await
            .map_err(|e| JobError::Failed(e.to_string()))?;
        match moved {
            Some(0) => return Ok(drained),
            Some(moved) => {
                drained.indexed += moved;
                ctx.info(format!("{} vectors moved into the index", drained.indexed));
            }
            None => {
                ctx.info("another job is moving vectors into the index: left to it");
                drained.busy = true;
                return Ok(drained);
            }
        }
    }
}

/// What [`index_vectors`] did.
#[derive(Debug, Default)]
struct Drained {
    indexed: u64,
    /// Another drainer held the index.
    busy: bool,
}

/// Drains the owner's backlog and then, unless another drainer holds the index, everyone
/// else's: a job that found the index busy leaves its owner's vectors to the drainer that
/// holds it, so each drainer finishes by taking whatever such jobs left.
async fn index_owner_then_everyone(
    memories: &Memories,
    owner: &str,
    ctx: &JobContext,
) -> Result<Value, JobError> {
    let own = index_vectors(memories, Some(owner), ctx).await?;
    let others = if own.busy { Drained::default() } else { index_vectors(memories, None, ctx).await? };
    Ok(
        json!({"indexed": own.indexed, "indexed_for_others": others.indexed, "left_to_another_drainer": own.busy}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(now: DateTime<Utc>, oldest_secs_ago: i64, newest_secs_ago: i64) -> BacklogSpan {
        BacklogSpan {
            oldest: now - chrono::Duration::seconds(oldest_secs_ago),
            newest: now - chrono::Duration::seconds(newest_secs_ago),
        }
    }

    #[test]
    fn indexing_waits_for_an_import_to_pause_but_not_for_ever() {
        let now = Utc::now();
        assert!(defers_indexing(span(now, 8, 1), now), "a vector stored a second ago: still importing");
        assert!(!defers_indexing(span(now, 8, 4), now), "quiet for longer than IMPORT_QUIET: index");
        assert!(!defers_indexing(span(now, 61, 0), now), "the oldest has waited MAX_INDEX_DEFERRAL: index");
        assert!(defers_indexing(span(now, 0, -1), now), "another clock a second ahead: still importing");
    }
}
