//! Text embeddings: all-MiniLM-L6-v2 run locally on the CPU with candle (384-d unit vectors),
//! or an OpenAI-compatible `/embeddings` endpoint when `EMBEDDING_BASE_URL` is set
//! ([`RemoteEmbedder`]). [`Embedder`] is the one of the two that callers use.
//!
//! The model files come from `scripts/install-model.sh` (which prints their directory, the
//! value of `ENGRAM_MODEL_DIR`). [`LocalEmbedder`] is loaded once, shared in an `Arc` and called
//! from `spawn_blocking` or a job: embedding is CPU-bound and synchronous.
//!
//! ```no_run
//! # fn main() -> Result<(), services::embed::EmbedError> {
//! use services::embed::{LocalEmbedder, cosine};
//! let embedder = LocalEmbedder::load(std::path::Path::new("/models/all-MiniLM-L6-v2"))?;
//! let docs = embedder.embed(&["I went jogging", "quarterly tax filing"])?;
//! let query = embedder.embed_query("running")?;
//! let best = docs.iter().map(|doc| cosine(&query, doc)).fold(f32::MIN, f32::max);
//! # Ok(()) }
//! ```

mod cache;
mod embedder;
mod model;
mod remote;

use std::path::PathBuf;

pub use embedder::{Embedder, LOCAL_MODEL_NAME};
pub use model::LocalEmbedder;
pub use remote::{MAX_REMOTE_BATCH, RemoteEmbedder, RemoteError};

/// Length of every vector of the local model.
pub const DIMENSIONS: usize = 384;

/// Tokens per input the model sees (the sentence-transformers `max_seq_length`); longer
/// inputs are truncated.
pub const MAX_TOKENS: usize = 256;

/// Why loading the model or embedding failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(
        "embedding model not found in {}: missing {}; run scripts/install-model.sh and set \
         ENGRAM_MODEL_DIR to the directory it prints",
        dir.display(),
        missing.join(", ")
    )]
    ModelMissing { dir: PathBuf, missing: Vec<&'static str> },
    #[error("cannot load embedding model file {}", path.display())]
    Load {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("tokenizing input for embedding failed")]
    Tokenize(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("embedding inference failed")]
    Inference(#[from] candle_core::Error),
    /// A remote embedding request failed (`EMBEDDING_BASE_URL`).
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The blocking thread running the local model panicked.
    #[error("the embedding thread stopped before finishing: {0}")]
    Interrupted(String),
}

/// Cosine similarity of two embeddings from this module. They are unit length, so this is
/// their dot product; in [-1, 1], higher is closer.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len(), "embeddings of different lengths");
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_is_the_dot_product() {
        assert_eq!(cosine(&[1.0, 0.0], &[1.0, 0.0]), 1.0);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
        assert!((cosine(&[0.6, 0.8], &[0.8, 0.6]) - 0.96).abs() < 1e-6);
    }

    #[test]
    fn missing_model_error_names_the_dir_and_the_script() {
        let err = EmbedError::ModelMissing {
            dir: PathBuf::from("/nowhere"),
            missing: vec!["config.json", "tokenizer.json"],
        };
        let message = err.to_string();
        assert!(message.contains("/nowhere"), "{message}");
        assert!(message.contains("config.json, tokenizer.json"), "{message}");
        assert!(message.contains("scripts/install-model.sh"), "{message}");
    }
}
