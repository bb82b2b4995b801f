//! Semantic memory benchmark (not a test), over HTTP against a release `engram-api` on the
//! embedded default and, when `DATABASE_URL` is set, on PostgreSQL + pgvector:
//! - import rate with precomputed 384-d vectors (batches of 2,000, answered inline; the first
//!   10,000 one request at a time, the next 90,000 two at a time), and on
//!   PostgreSQL how long the `index_memory_vectors` jobs then take to put them in HNSW;
//! - search latency p50/p95 at 10,000 and 100,000 memories in one user's account: semantic
//!   with a precomputed query vector (no embedding), keyword, and hybrid from query text
//!   (the query embedded by the local model, each query new so the cache never answers);
//! - embedding throughput: single creates (one inline embedding each) and an import of
//!   1,000 texts without vectors (an `import_memories` job, embedded in batches);
//! - WebSocket fan-out: two sockets of the user, a change through REST, time until both hear.
//!
//! Run by `scripts/bench-memories.sh`, which builds the release binaries this drives.

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use support::{Deployment, start};
use tokio_tungstenite::connect_async;

const DIMS: usize = 384;
const BATCH: usize = 2_000;
const SIZES: [usize; 2] = [10_000, 100_000];
const QUERIES: usize = 200;

/// Topics the vectors cluster around, as sentence embeddings do (texts on one subject lie
/// near each other). Uniform random vectors, every one about equally far from every other,
/// are the worst case for HNSW and unlike any text embedding.
const TOPICS: u64 = 2_000;
/// Each coordinate's noise around the topic (uniform in ±this): a vector's cosine to its
/// topic is about 0.7 and to another of its topic about 0.5, to any other about 0.
const SPREAD: f64 = 0.09;

/// xorshift64, for reproducible data without a dependency.
struct Xorshift(u64);

impl Xorshift {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [-1, 1].
    fn signed(&mut self) -> f64 {
        (self.next() % 2_000_001) as f64 / 1_000_000.0 - 1.0
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() % 1_000_000) as f64 / 1_000_000.0
    }
}

fn normalised(raw: Vec<f64>) -> Vec<f64> {
    let norm = raw.iter().map(|v| v * v).sum::<f64>().sqrt();
    raw.iter().map(|v| (v / norm * 1e6).round() / 1e6).collect()
}

/// A unit vector for `seed` near one of the [`TOPICS`], rounded to 6 decimals.
fn vector(seed: u64) -> Vec<f64> {
    let mut rng = Xorshift::new(seed);
    let mut topic = Xorshift::new(u64::MAX - rng.next() % TOPICS);
    let topic: Vec<f64> = normalised((0..DIMS).map(|_| topic.signed()).collect());
    normalised(topic.iter().map(|t| t + SPREAD * rng.signed()).collect())
}

const SYLLABLES: [&str; 16] =
    ["ka", "lo", "mi", "ren", "tu", "sa", "vi", "dor", "pe", "qua", "ne", "bri", "fo", "gal", "hu", "zet"];
/// Words of the synthetic vocabulary (16³); [`word`] draws them skewed, as in natural text,
/// where a few words are common and most are rare.
const VOCABULARY: f64 = 4_096.0;

/// A word drawn from the vocabulary by `rng`: index `V·u²`, so the commonest word is 1.6%
/// of draws (in about 5% of memories) and word 1,024 is 0.02%.
fn word(rng: &mut Xorshift) -> String {
    let u = rng.unit();
    let n = (VOCABULARY * u * u) as usize;
    format!("{}{}{}", SYLLABLES[n % 16], SYLLABLES[(n / 16) % 16], SYLLABLES[n / 256])
}

fn sentence(i: usize) -> String {
    let mut rng = Xorshift::new(i as u64 + 7);
    format!(
        "Memory {i}: notes about the {} and the {} before the {}",
        word(&mut rng),
        word(&mut rng),
        word(&mut rng)
    )
}

/// A query's words, drawn as the memories' are.
fn query_words(q: usize) -> (String, String) {
    let mut rng = Xorshift::new(3_000_000_000 + q as u64);
    (word(&mut rng), word(&mut rng))
}

/// The import requests' bodies for memories `from..to`, made before any is timed: the
/// figure is the server's import rate, not the client's JSON encoding on the same cores.
fn import_bodies(from: usize, to: usize) -> Vec<Vec<u8>> {
    (from..to)
        .step_by(BATCH)
        .map(|start| {
            let items: Vec<Value> = (start..(start + BATCH).min(to))
                .map(|i| json!({"id": format!("m{i:07}"), "content": sentence(i), "type": "fact", "embedding": vector(i as u64)}))
                .collect();
            serde_json::to_vec(&json!({"memories": items})).unwrap()
        })
        .collect()
}

/// Imports memories `from..to` in requests of [`BATCH`], `in_flight` at a time.
async fn import(d: &Deployment, from: usize, to: usize, in_flight: usize) -> Duration {
    let bodies = import_bodies(from, to);
    let started = Instant::now();
    let url = format!("{}/api/v1/memories/import", d.url);
    let requests = bodies.into_iter().map(|body| {
        let request =
            d.client.post(&url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let reply: Value = response.json().await.unwrap();
            assert!(status.as_u16() == 201 && reply["imported"].as_u64().is_some(), "{status} {reply}");
        }
    });
    futures::stream::iter(requests).buffer_unordered(in_flight).collect::<()>().await;
    started.elapsed()
}

/// Waits until none of the user's `index_memory_vectors` jobs is queued or running.
async fn wait_for_indexing(d: &Deployment) -> Duration {
    let started = Instant::now();
    loop {
        let page: Value = d
            .client
            .get(format!("{}/api/v1/jobs?kind=index_memory_vectors&limit=1000", d.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let jobs = page["jobs"].as_array().expect("a page of jobs");
        if let Some(failed) = jobs.iter().find(|j| matches!(j["status"].as_str(), Some("failed" | "dead"))) {
            panic!("an indexing job failed: {failed}");
        }
        if jobs.iter().all(|j| matches!(j["status"].as_str(), Some("succeeded" | "cancelled"))) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at =
        |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)].as_secs_f64() * 1e3;
    (at(0.5), at(0.95))
}

async fn search_latency(d: &Deployment, body: impl Fn(usize) -> Value) -> (f64, f64) {
    let mut samples = Vec::with_capacity(QUERIES);
    for q in 0..QUERIES {
        let started = Instant::now();
        let response =
            d.client.post(format!("{}/api/v1/memories/search", d.url)).json(&body(q)).send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.text().await.unwrap());
        response.bytes().await.unwrap();
        samples.push(started.elapsed());
    }
    percentiles(samples)
}

async fn searches(d: &Deployment, label: &str, size: usize) {
    let semantic = search_latency(
        d,
        |q| json!({"mode": "semantic", "limit": 10, "embedding": vector(1_000_000_000 + q as u64)}),
    )
    .await;
    let keyword = search_latency(d, |q| {
        let (first, second) = query_words(q);
        json!({"mode": "keyword", "limit": 10, "query": format!("{first} {second}")})
    })
    .await;
    let hybrid = search_latency(d, |q| {
        let (first, second) = query_words(q + QUERIES);
        json!({"mode": "hybrid", "limit": 10, "query": format!("what about the {first} near {second} ({q})")})
    })
    .await;
    println!(
        "{label}: {size} memories: semantic (vector given) p50 {:.1} ms p95 {:.1} ms; keyword p50 {:.1} ms p95 {:.1} ms; \
         hybrid (query embedded) p50 {:.1} ms p95 {:.1} ms",
        semantic.0, semantic.1, keyword.0, keyword.1, hybrid.0, hybrid.1
    );
}

async fn embedding_throughput(d: &Deployment, label: &str) {
    let mut singles = Vec::new();
    for i in 0..50 {
        let started = Instant::now();
        let body = json!({"content": format!("single create number {i}: {}", sentence(i)), "type": "fact", "scope": "session"});
        let response = d.client.post(format!("{}/api/v1/memories", d.url)).json(&body).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 201);
        singles.push(started.elapsed());
    }
    let (p50, p95) = percentiles(singles);
    let items: Vec<Value> = (0..1_000)
        .map(|i| json!({"content": format!("bulk text {i}: {}", sentence(i * 13)), "type": "fact"}))
        .collect();
    let started = Instant::now();
    let response = d
        .client
        .post(format!("{}/api/v1/memories/import", d.url))
        .header("prefer", "respond-async")
        .json(&json!({"memories": items}))
        .send()
        .await
        .unwrap();
    let accepted: Value = response.json().await.unwrap();
    let job = accepted["job_id"].as_str().expect("a job").to_string();
    loop {
        let state: Value =
            d.client.get(format!("{}/api/v1/jobs/{job}", d.url)).send().await.unwrap().json().await.unwrap();
        match state["status"].as_str() {
            Some("succeeded") => break,
            Some("failed" | "dead" | "cancelled") => panic!("import job ended {state}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let bulk = 1_000.0 / started.elapsed().as_secs_f64();
    println!(
        "{label}: create with inline embedding p50 {p50:.1} ms p95 {p95:.1} ms; bulk embedding {bulk:.0} texts/s"
    );
}

async fn fan_out(d: &Deployment, label: &str) {
    let url = format!("{}/api/v1/sync?token={}", d.url.replacen("http://", "ws://", 1), d.token);
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let (mut socket, _) = connect_async(&url).await.unwrap();
        let connected = socket.next().await.unwrap().unwrap();
        assert!(connected.to_text().unwrap().contains("CONNECTED"));
        sockets.push(socket);
    }
    let mut samples = Vec::new();
    for i in 0..100 {
        let body = json!({"content": format!("fan-out {i}"), "type": "fact", "scope": "session", "generateEmbedding": false});
        let started = Instant::now();
        let response = d.client.post(format!("{}/api/v1/memories", d.url)).json(&body).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 201);
        for socket in &mut sockets {
            loop {
                let message = socket.next().await.unwrap().unwrap();
                if message.is_text() && message.to_text().unwrap().contains(&format!("fan-out {i}\"")) {
                    break;
                }
            }
        }
        samples.push(started.elapsed());
    }
    let (p50, p95) = percentiles(samples);
    println!(
        "{label}: create → both sockets told: p50 {p50:.1} ms p95 {p95:.1} ms (REST round trip included)"
    );
}

/// `imports_only` stops after the imports and their indexing (for work on the import path).
async fn run(label: &str, database_url: Option<&str>, imports_only: bool) {
    let limits = [
        ("MEMORY_SEARCH_RATE_LIMIT", "10000000"),
        ("MEMORY_IMPORT_RATE_LIMIT", "10000000"),
        ("ENGRAM_REQUEST_TIMEOUT_SECS", "600"),
    ];
    let d = start(database_url, &limits).await;
    let mut stored = 0;
    // The first import sends one request at a time; the rest two at once, as a client
    // moving a large collection would (one request parses while another is stored).
    for (size, in_flight) in SIZES.into_iter().zip([1, 2]) {
        let took = import(&d, stored, size, in_flight).await;
        println!(
            "{label}: imported {} memories with vectors in {:.1} s ({in_flight} request(s) in flight): {:.0}/s",
            size - stored,
            took.as_secs_f64(),
            (size - stored) as f64 / took.as_secs_f64()
        );
        let indexing = wait_for_indexing(&d).await;
        println!(
            "{label}: the vectors were in the index {:.1} s after the import answered",
            indexing.as_secs_f64()
        );
        stored = size;
        if !imports_only {
            searches(&d, label, size).await;
        }
    }
    if imports_only {
        return;
    }
    embedding_throughput(&d, label).await;
    fan_out(&d, label).await;
}

#[tokio::main]
async fn main() {
    api::install_tls_provider();
    // `bench_memories postgres` skips the embedded default; `imports` measures imports only.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let imports_only = args.iter().any(|a| a == "imports");
    if !args.iter().any(|a| a == "postgres") {
        run("sqlite", None, imports_only).await;
    }
    if let Ok(url) = std::env::var("DATABASE_URL") {
        run("postgres", Some(&url), imports_only).await;
    }
}
