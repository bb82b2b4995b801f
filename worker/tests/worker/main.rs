//! The worker crate's integration tests, one binary with a module per area.

mod worker_binary;
