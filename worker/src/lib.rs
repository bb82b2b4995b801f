//! engram-worker's library: the process plumbing both binaries share (logging, signals,
//! start-up errors) and the worker runtime that `engram-api` embeds.

pub mod process;
pub mod telemetry;
