//! [`Embedder`]: the embedding service semantic memories call, whichever model backs it — the
//! local all-MiniLM-L6-v2 ([`LocalEmbedder`], run on a blocking thread) or an
//! OpenAI-compatible endpoint ([`RemoteEmbedder`], when `EMBEDDING_BASE_URL` is set). Both
//! answer unit vectors and cache recent query embeddings.
//!
//! Vector length: 384 for the local model. For a remote one it is `EMBEDDING_DIMENSIONS`
//! when configured, else unknown (0) until the first answer; call
//! [`Embedder::probe_dimensions`] once at start-up, or wherever the length is needed before
//! anything was embedded, to learn it with one short request.

use std::fmt;
use std::sync::{Arc, LazyLock};

use storage::blocking::BoundedPool;
use storage::config::EmbeddingConfig;

use super::{DIMENSIONS, EmbedError, LocalEmbedder, RemoteEmbedder};

/// The name [`Embedder::model_name`] gives the local model.
pub const LOCAL_MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// The configured embedding model. Cheap to clone.
#[derive(Clone)]
pub enum Embedder {
    Local(Arc<LocalEmbedder>),
    Remote(Arc<RemoteEmbedder>),
}

impl fmt::Debug for Embedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Embedder::Local(_) => f.debug_tuple("Embedder::Local").field(&LOCAL_MODEL_NAME).finish(),
            Embedder::Remote(remote) => f.debug_tuple("Embedder::Remote").field(remote).finish(),
        }
    }
}

impl Embedder {
    /// The remote model when `EMBEDDING_BASE_URL` is configured, else `local` (the loaded
    /// local model, if its files are installed), else `None`.
    pub fn from_config(
        config: &EmbeddingConfig,
        local: Option<Arc<LocalEmbedder>>,
    ) -> Result<Option<Self>, EmbedError> {
        match RemoteEmbedder::from_config(config)? {
            Some(remote) => Ok(Some(Embedder::Remote(Arc::new(remote)))),
            None => Ok(local.map(Embedder::Local)),
        }
    }

    /// Length of every vector: 384 locally; for a remote model the configured or learned
    /// length, or 0 while it is unknown (see [`Embedder::probe_dimensions`]).
    pub fn dimensions(&self) -> usize {
        match self {
            Embedder::Local(_) => DIMENSIONS,
            Embedder::Remote(remote) => remote.dimensions().unwrap_or(0),
        }
    }

    /// Length of every vector, asking a remote model once if it is not known yet. Also a
    /// cheap check that the remote URL, key and model work.
    pub async fn probe_dimensions(&self) -> Result<usize, EmbedError> {
        match self {
            Embedder::Local(_) => Ok(DIMENSIONS),
            Embedder::Remote(remote) => Ok(remote.probe_dimensions().await?),
        }
    }

    /// The model's name, for logs and for telling vectors of different models apart.
    pub fn model_name(&self) -> &str {
        match self {
            Embedder::Local(_) => LOCAL_MODEL_NAME,
            Embedder::Remote(remote) => remote.model(),
        }
    }

    /// Embeds each text into a unit vector, in input order. Batched by length; runs the
    /// local model on a blocking thread.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Embedder::Local(local) => {
                let local = local.clone();
                run_blocking(move || {
                    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                    local.embed(&texts)
                })
                .await
            }
            Embedder::Remote(remote) => {
                let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                Ok(remote.embed(&texts).await?)
            }
        }
    }

    /// Embeds one search query, through a small LRU cache of recent queries.
    pub async fn embed_query(&self, text: &str) -> Result<Arc<[f32]>, EmbedError> {
        match self {
            Embedder::Local(local) => {
                let local = local.clone();
                let text = text.to_owned();
                run_blocking(move || local.embed_query(&text)).await
            }
            Embedder::Remote(remote) => Ok(remote.embed_query(text).await?),
        }
    }
}

/// The share of the blocking pool the local model runs in: one inference per core at most,
/// so a burst of embeddings queues here instead of taking every blocking thread.
static MODEL_POOL: LazyLock<BoundedPool> = LazyLock::new(BoundedPool::per_core);

/// Runs CPU-bound model work in [`MODEL_POOL`].
async fn run_blocking<T, F>(work: F) -> Result<T, EmbedError>
where
    F: FnOnce() -> Result<T, EmbedError> + Send + 'static,
    T: Send + 'static,
{
    MODEL_POOL.run(work).await.map_err(|e| EmbedError::Interrupted(e.to_string()))?
}
