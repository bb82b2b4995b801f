//! The storage crate's integration tests, one binary: a conformance suite per store run on
//! every backend it supports (`storage::store_suite!`), plus git repos and the block index.

mod blob_index_suite;
mod blob_suite;
mod block_index;
mod counter_suite;
mod eval_suite;
mod event_suite;
mod federation_suite;
mod git_repo;
mod identity_suite;
mod job_suite;
mod kv_suite;
mod memory_repo_suite;
mod memory_suite;
mod worker_schedule_suite;
