//! What the benchmark examples share: where the release binaries are, the admin key their
//! deployments run with, and a client that sends it.
#![allow(dead_code)]

/// The static admin key the benchmarks' deployments run with.
pub const ADMIN_KEY: &str = "engram-bench-admin-key";

/// A binary built beside this example (`target/release/<name>`).
pub fn bin(name: &str) -> std::path::PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join(name)
}

/// A client that authenticates every request with `ADMIN_KEY`.
pub fn admin_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {ADMIN_KEY}")).unwrap();
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}
