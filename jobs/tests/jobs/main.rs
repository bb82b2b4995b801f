//! The jobs crate's integration tests, one binary with a module per area.

mod apalis_workarounds;
