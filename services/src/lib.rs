//! The logic of Engram's memory services, one module each: git memory (DiffMem), semantic
//! memories (AIBrain), blob sync (the memory proxy), federation (the agmem coordinator) and
//! agent evaluations (Memory-Break: `evals`), with what they share: the chat model client (`llm`) and the embedding models (`embed`).
//! API routes and job handlers call into these; they know neither HTTP nor the job engine.
//! `Services` holds one of each, built once at start-up from the configuration and backends.

pub mod blob_sync;
pub mod embed;
pub mod evals;
pub mod federation;
pub mod git_memory;
pub mod llm;
pub mod memories;
pub mod process;
pub(crate) mod provider_http;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::blob_sync::{BlobSync, SyncLimits};
use storage::{Backends, Config};

use crate::embed::{Embedder, LocalEmbedder};
use crate::evals::Evals;
use crate::evals::agents::Agents;
use crate::evals::judge::LlmJudge;
use crate::evals::service::RunLimits;
use crate::federation::Federation;
use crate::git_memory::GitMemory;
use crate::llm::LlmClient;
use crate::memories::Memories;

#[derive(Clone)]
pub struct Services {
    pub git_memory: Arc<GitMemory>,
    /// The configured chat model; `None` runs the rule-based stand-ins.
    pub llm: Option<Arc<LlmClient>>,
    /// The local embedding model, when its files are installed (`scripts/install-model.sh`).
    pub embedder: Option<Arc<LocalEmbedder>>,
    /// What semantic memories embed with: the remote model when `EMBEDDING_BASE_URL` is set,
    /// else the local one above; `None` when neither is available.
    pub embeddings: Option<Embedder>,
    /// Semantic memories (AIBrain): store, embeddings and change events.
    pub memories: Arc<Memories>,
    /// Blob sync (the memory proxy) over the blob store, its index and the event bus.
    pub blob_sync: Arc<BlobSync>,
    /// Federation (the agmem coordinator).
    pub federation: Federation,
    /// Agent evaluations (Memory-Break).
    pub evals: Arc<Evals>,
    pub tombstone_retention_days: u32,
}

/// Loads the model when `dir` holds it; without it, features that rank by meaning fall back
/// to what they can do without (and say so in the log).
fn load_embedder(dir: &Path) -> Option<Arc<LocalEmbedder>> {
    if !dir.join("config.json").exists() {
        tracing::warn!(dir = %dir.display(), "no embedding model installed (scripts/install-model.sh); ranking by meaning is off");
        return None;
    }
    match LocalEmbedder::load(dir) {
        Ok(embedder) => Some(Arc::new(embedder)),
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "the embedding model could not be loaded; ranking by meaning is off");
            None
        }
    }
}

/// The LLM judge on the configured provider, asking `JUDGE_MODEL` when set; `None` without a
/// provider (the deterministic judge scores then).
fn llm_judge(config: &Config) -> anyhow::Result<Option<LlmJudge>> {
    let Some(provider) = &config.llm.provider else { return Ok(None) };
    let model = config.evals.judge_model.clone().unwrap_or_else(|| provider.model.clone());
    let client = LlmClient::new(
        provider.base_url.expose(),
        model,
        provider.api_key.clone(),
        config.llm.timeout,
        config.llm.max_retries,
    )?;
    Ok(Some(LlmJudge::new(client)))
}

impl Services {
    /// `secret` keys the sealing of stored remote tokens (the deployment's JWT secret).
    pub fn new(config: &Config, backends: &Backends, secret: &str) -> anyhow::Result<Self> {
        let llm = LlmClient::from_config(&config.llm)?.map(Arc::new);
        let embedder = load_embedder(&config.model_dir);
        let embeddings = Embedder::from_config(&config.embedding, embedder.clone())?;
        let store = backends.database.memory_repo_store();
        let git_memory = GitMemory::new(config, store, secret, llm.clone(), embedder.clone());
        let limits = SyncLimits {
            max_file_bytes: config.blob_sync.max_file_bytes.min(config.http.body_limit_bytes),
            keep_versions: config.blob_sync.versions,
        };
        let blob_sync = BlobSync::new(
            backends.blobs.clone(),
            backends.database.blob_index(),
            backends.events.clone(),
            limits,
        );
        let agents = Agents::load(config.evals.agents_file.as_deref()).map_err(anyhow::Error::msg)?;
        let evals = Evals::new(
            backends.database.eval_store(),
            backends.blobs.clone(),
            agents,
            llm_judge(config)?,
            config.data_dir.join("evals"),
            RunLimits {
                turn_timeout: Duration::from_secs(config.evals.turn_timeout_secs),
                run_timeout: Duration::from_secs(config.evals.run_timeout_secs),
                max_deep_dive_turns: usize::try_from(config.evals.max_deep_dive_turns).unwrap_or(usize::MAX),
            },
        );
        Ok(Self {
            evals: Arc::new(evals),
            git_memory: Arc::new(git_memory),
            llm,
            embedder,
            memories: Arc::new(Memories::new(
                backends.database.memory_store(),
                backends.events.clone(),
                embeddings.clone(),
            )),
            embeddings,
            blob_sync: Arc::new(blob_sync),
            federation: Federation::new(backends.database.federation_store()),
            tombstone_retention_days: config.blob_sync.tombstone_retention_days,
        })
    }
}
