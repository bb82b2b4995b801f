//! Entity similarity for `wide` and deeper contexts: the descriptions in `index.md` embedded
//! with the local model (once per distinct text, kept in memory) and ranked by cosine
//! similarity to the conversation. Without the model the conversation's search alone
//! finds the entities.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::context::{ChatTurn, conversation_text};
use super::{GitMemory, GitMemoryError, GitMemoryResult, blocking};
use crate::embed::{LocalEmbedder, cosine};

/// Below this similarity an entity is not about the conversation.
const SIMILARITY_FLOOR: f32 = 0.2;
/// Entities ranked by similarity, at most.
const SIMILAR_ENTITIES: usize = 10;
/// Description vectors kept, over every user; the cache starts afresh past it.
const CACHED_VECTORS: usize = 50_000;

/// Description text → its vector.
pub type VectorCache = Arc<Mutex<HashMap<String, Arc<[f32]>>>>;

fn embed_error(e: impl std::fmt::Display) -> GitMemoryError {
    GitMemoryError::Internal(format!("the embedding model failed: {e}"))
}

impl GitMemory {
    /// Paths of the `index.md` entities whose descriptions are most like the conversation.
    pub async fn similar_entities(
        &self,
        user_id: &str,
        conversation: &[ChatTurn],
    ) -> GitMemoryResult<Vec<String>> {
        let Some(embedder) = self.embedder.clone() else { return Ok(Vec::new()) };
        let known = self.known_entities(user_id).await?;
        if known.is_empty() {
            return Ok(Vec::new());
        }
        let query = conversation_text(conversation);
        let cache = self.description_vectors.clone();
        blocking(move || {
            let texts: Vec<String> = known.iter().map(|e| format!("{}: {}", e.name, e.description)).collect();
            let missing: Vec<&str> = {
                let cached = cache.lock().unwrap();
                texts.iter().filter(|t| !cached.contains_key(*t)).map(String::as_str).collect()
            };
            let fresh = if missing.is_empty() {
                Vec::new()
            } else {
                embedder.embed(&missing).map_err(embed_error)?
            };
            let query = embedder_query(&embedder, &query)?;
            let mut cached = cache.lock().unwrap();
            if cached.len() + fresh.len() > CACHED_VECTORS {
                cached.clear();
            }
            for (text, vector) in missing.iter().zip(fresh) {
                cached.insert(text.to_string(), vector.into());
            }
            let mut ranked: Vec<(f32, String)> = known
                .iter()
                .zip(&texts)
                .filter_map(|(entry, text)| Some((cosine(&query, cached.get(text)?), entry.path.clone())))
                .filter(|(score, _)| *score >= SIMILARITY_FLOOR)
                .collect();
            ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
            Ok(ranked.into_iter().take(SIMILAR_ENTITIES).map(|(_, path)| path).collect())
        })
        .await
    }
}

fn embedder_query(embedder: &LocalEmbedder, text: &str) -> GitMemoryResult<Arc<[f32]>> {
    embedder.embed_query(text).map_err(embed_error)
}
