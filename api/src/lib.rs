//! engram-api: the HTTP server. Routes parse, authorise, call one function of `jobs` or
//! `storage`, and shape the reply; errors render per route family (see `error`).

pub mod auth;
pub mod error;
pub mod http;
pub mod startup;
pub mod state;

pub use startup::Application;
