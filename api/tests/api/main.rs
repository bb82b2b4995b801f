//! The api crate's integration tests, one binary: the real server (in-process on port 0, or the
//! real `engram-api` binary) over HTTP on every stack, a module per service or area.

#[macro_use]
mod common;

mod auth_api;
mod binary;
mod blob_sync;
mod cross_process;
mod evals;
mod federation;
mod git_http_server;
mod git_memory;
mod git_memory_llm;
mod git_memory_paths;
mod git_memory_remote;
mod github_auth;
mod job_delivery;
mod jobs_api;
mod jobs_tenants;
mod login_throttle;
mod memories;
mod memories_search_eval;
mod memories_ws;
mod platform_http;
mod sso_auth;
mod sync_cli;
mod tenancy;
