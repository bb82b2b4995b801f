//! Semantic memories (AIBrain): the service the API routes, the WebSocket and the ingest and
//! import jobs share. It embeds (inline for one memory or a query, batched in jobs), stores
//! through `storage::sql::MemoryStore`, searches in three modes and publishes every change
//! on the event bus topic of its owner, so devices of that user hear of it from any process.

pub mod extract;
pub mod import;
pub mod ingest;
pub mod search;
mod service;

pub use search::{ScoreParts, SearchHit, SearchMode, SearchRequest};
pub use service::{
    ImportOutcome, Memories, MemoriesError, change_json, changes_topic, decode_cursor, encode_cursor,
    memory_json,
};

/// Tags one memory may carry.
pub const MAX_TAGS: usize = 20;
