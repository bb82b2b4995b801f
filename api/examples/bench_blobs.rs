//! Blob sync benchmark (not a test): `PUT /blob/{path}` (creates) and `GET /blob/{path}`
//! throughput over HTTP with 1 KiB and 1 MiB files, four concurrent clients, against the
//! release `engram-api` on files + SQLite and on S3 + PostgreSQL (the servers of
//! `scripts/services.sh`). Run by `scripts/bench-blobs.sh`.

#[path = "support/mod.rs"]
mod support;

use support::{ADMIN_KEY, admin_client, bin};

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

const CLIENTS: usize = 4;

async fn start(env: &[(String, String)], dir: &std::path::Path) -> (String, Child) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(bin("engram-api"))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("ENGRAM_DATA_DIR", dir)
        .env("ENGRAM_BIND", format!("127.0.0.1:{port}"))
        .env("API_KEY", ADMIN_KEY)
        .env("LOG_LEVEL", "warn")
        .env("BLOB_MAX_MB", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the release engram-api is built");
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client.get(format!("{url}/health")).send().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "engram-api did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (url, child)
}

/// Runs `count` requests from `CLIENTS` concurrent clients; returns (elapsed, latencies in ms).
async fn drive<F, Fut>(count: usize, request: F) -> (Duration, Vec<f64>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let request = Arc::new(request);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let clients = (0..CLIENTS).map(|_| {
        let (request, next) = (request.clone(), next.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return latencies;
                }
                let at = Instant::now();
                request(i).await;
                latencies.push(at.elapsed().as_secs_f64() * 1000.0);
            }
        })
    });
    let mut latencies: Vec<f64> = Vec::new();
    for client in clients {
        latencies.extend(client.await.unwrap());
    }
    (started.elapsed(), latencies)
}

fn report(stack: &str, what: &str, size: usize, count: usize, elapsed: Duration, mut latencies: Vec<f64>) {
    latencies.sort_by(|a, b| a.total_cmp(b));
    let per_second = count as f64 / elapsed.as_secs_f64();
    let megabytes = per_second * size as f64 / (1024.0 * 1024.0);
    println!(
        "{stack:<14} {what:<4} {:>5} KiB  {count:>5} requests  {per_second:>8.0}/s  {megabytes:>7.1} MiB/s  p50 {:>6.2} ms  p95 {:>6.2} ms",
        size / 1024,
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 95 / 100],
    );
}

async fn bench_stack(name: &str, env: Vec<(String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let (url, _api) = start(&env, dir.path()).await;
    let client = admin_client();
    for (size, count) in [(1024usize, 3000usize), (1024 * 1024, 200)] {
        let body = axum::body::Bytes::from(vec![b'e'; size]);
        let prefix = format!("bench/{size}");
        let (c, u, p, b) = (client.clone(), url.clone(), prefix.clone(), body.clone());
        let (elapsed, latencies) = drive(count, move |i| {
            let request = c.put(format!("{u}/blob/{p}/{i}.bin")).header("Content-MD5", "new").body(b.clone());
            async move {
                let status = request.send().await.unwrap().status();
                assert_eq!(status, 201);
            }
        })
        .await;
        report(name, "PUT", size, count, elapsed, latencies);
        let (c, u, p) = (client.clone(), url.clone(), prefix.clone());
        let (elapsed, latencies) = drive(count, move |i| {
            let request = c.get(format!("{u}/blob/{p}/{i}.bin"));
            async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 200);
                assert_eq!(response.bytes().await.unwrap().len(), size);
            }
        })
        .await;
        report(name, "GET", size, count, elapsed, latencies);
    }
}

#[tokio::main]
async fn main() {
    api::install_tls_provider();
    bench_stack("files+sqlite", Vec::new()).await;
    let postgres = storage::testing::fresh_postgres_url().await;
    let s3 = storage::testing::s3_env();
    match (postgres, s3) {
        (Some(url), Some(s3)) => {
            let mut env = vec![("DATABASE_URL".to_string(), url)];
            env.extend(s3);
            bench_stack("s3+postgres", env).await;
        }
        _ => println!("s3+postgres: skipped (run scripts/bench-blobs.sh, which starts the services)"),
    }
}
