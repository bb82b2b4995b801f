//! The job engine: job kinds and their thin handlers (which call into `services`), the
//! context they run with, the engine that submits, runs, retries and cancels them, schedules,
//! and the queue backends that deliver them.

pub mod backoff;
pub mod batch;
pub mod context;
pub mod cron;
pub mod delivery;
pub mod engine;
pub mod error;
pub mod events;
pub mod kind;
pub mod kinds;
pub mod logs;
pub mod nul;
pub mod queue;
pub mod runner;
pub mod system;

pub use context::JobContext;
pub use delivery::QueueBackend;
pub use error::JobError;
pub use kind::{Kind, Policy, Registry};
pub use system::{JobSystem, WorkerOptions};
