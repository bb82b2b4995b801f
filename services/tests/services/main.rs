//! The services crate's integration tests, one binary with a module per area.

mod embedder;
mod eval_runs;
mod extract;
mod llm_client;
