//! The work Engram does in the background. For now: the job queue backend that `/health`
//! reports on; job kinds, payloads and handlers build on it.

pub mod queue;

pub use queue::QueueBackend;
