//! The work Engram does in the background: job kinds and their handlers, the context they
//! run with, the engine that submits, runs, retries and cancels them, and the queue
//! backends that deliver them.

pub mod backoff;
pub mod batch;
pub mod child;
pub mod context;
pub mod cron;
pub mod delivery;
pub mod embed;
pub mod engine;
pub mod events;
pub mod gitmem;
pub mod kinds;
pub mod llm;
pub mod logs;
pub mod memories;
pub mod nul;
pub(crate) mod provider_http;
pub mod queue;
pub mod runner;
pub mod services;
pub mod system;

pub use context::JobContext;
pub use delivery::QueueBackend;
pub use kinds::{JobError, Kind, Policy, Registry};
pub use services::Services;
pub use system::{JobSystem, WorkerOptions};
