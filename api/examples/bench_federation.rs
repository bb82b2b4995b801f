//! Federation benchmark (not a test): pushes/s and pulls/s over HTTP against a release
//! `engram-api` on the embedded default and, when `DATABASE_URL` is set, on PostgreSQL.
//! Workload: 3 agents of 1,000 fact hashes and 20 topics each; each agent's client pushes in
//! a loop (every push replaces 50 of its hashes and moves its counts), then 4 clients pull
//! the whole merge, then 4 clients pull `since` the latest cursor; each phase runs for
//! `SECONDS`. Last, one push of 100,000 hashes and a re-push with 10% of them replaced. Run
//! by `scripts/bench-federation.sh`, which builds the release binaries this drives.

#[path = "support/mod.rs"]
mod support;

use support::{Deployment, start};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const SECONDS: u64 = 5;
const AGENTS: usize = 3;
const HASHES: usize = 1_000;
const TOPICS: usize = 20;
const CHURN: usize = 50;
const PULLERS: usize = 4;

/// A 64-digit hex hash for (agent, index), like the SHA-256 hashes agmem sends.
fn hash(agent: usize, index: usize) -> String {
    let mut x = (agent as u64) << 40 ^ index as u64 ^ 0x9e37_79b9_7f4a_7c15;
    let mut words = [0u64; 4];
    for word in &mut words {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *word = x;
    }
    words.iter().map(|w| format!("{w:016x}")).collect()
}

/// Rounds after which an agent's window of hashes starts over (timestamps keep rising).
const CYCLE: usize = 200;

/// The hashes `agent` draws its summaries from.
fn pool(agent: usize, len: usize) -> Vec<String> {
    (0..len).map(|i| hash(agent, i)).collect()
}

/// Push number `round` of `agent`, holding `hashes`, with counts that move.
fn summary(agent: usize, round: usize, hashes: &[String]) -> Value {
    let topics: serde_json::Map<String, Value> =
        (0..TOPICS).map(|t| (format!("topic-{t}"), json!((t + round + agent) % 17))).collect();
    let timestamp = chrono::DateTime::UNIX_EPOCH + chrono::Duration::seconds(1_700_000_000 + round as i64);
    json!({"summary": {"agent_id": format!("agent-{agent}"), "timestamp": timestamp, "topic_counts": topics,
        "fact_hashes": hashes, "metadata": {"version": "bench"}}})
}

async fn push(d: &Deployment, body: &Value) -> Duration {
    let started = Instant::now();
    let response = d.client.post(format!("{}/push", d.url)).json(body).send().await.unwrap();
    let status = response.status();
    let reply: Value = response.json().await.unwrap();
    assert!(status.is_success() && reply["status"] == "accepted", "{status} {reply}");
    started.elapsed()
}

async fn pull(d: &Deployment, query: &str) -> (Duration, Value) {
    let started = Instant::now();
    let response = d.client.get(format!("{}/pull{query}", d.url)).send().await.unwrap();
    assert!(response.status().is_success());
    let reply: Value = response.json().await.unwrap();
    (started.elapsed(), reply)
}

/// Runs `clients` loops of `op` for `SECONDS`; prints the rate and latency percentiles.
async fn phase<F, Fut>(label: &str, clients: usize, op: F)
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Duration> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (op, stop) = (op.clone(), stop.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    latencies.push(op(client, latencies.len()).await);
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(SECONDS)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<f64> = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap().into_iter().map(|d| d.as_secs_f64() * 1000.0));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    println!(
        "  {label:<40} {:>7.0}/s  p50 {:>6.2} ms  p95 {:>6.2} ms  ({} requests, {clients} clients)",
        latencies.len() as f64 / elapsed,
        at(0.5),
        at(0.95),
        latencies.len()
    );
}

async fn run(name: &str, database_url: Option<&str>) {
    println!("{name}:");
    let d = Arc::new(start(database_url, &[("FEDERATION_RATE_LIMIT", "10000000")]).await);
    let pools: Arc<Vec<Vec<String>>> =
        Arc::new((0..AGENTS).map(|agent| pool(agent, HASHES + CYCLE * CHURN)).collect());
    for agent in 0..AGENTS {
        push(&d, &summary(agent, 0, &pools[agent][..HASHES])).await;
    }
    let deployment = d.clone();
    phase("push (1,000 hashes, 50 replaced, 20 topics)", AGENTS, move |agent, i| {
        let d = deployment.clone();
        // Each round slides the agent's window of hashes by CHURN.
        let start = ((i + 1) % CYCLE) * CHURN;
        let body = summary(agent, i + 1, &pools[agent][start..start + HASHES]);
        async move { push(&d, &body).await }
    })
    .await;

    let (_, whole) = pull(&d, "").await;
    let facts = whole["metadata"]["total_facts"].as_i64().unwrap();
    let deployment = d.clone();
    phase(&format!("pull, whole merge ({facts} hashes)"), PULLERS, move |_, _| {
        let d = deployment.clone();
        async move { pull(&d, "").await.0 }
    })
    .await;
    let since = format!("?since={}", whole["cursor"]);
    let deployment = d.clone();
    phase("pull since the latest cursor", PULLERS, move |_, _| {
        let (d, since) = (deployment.clone(), since.clone());
        async move { pull(&d, &since).await.0 }
    })
    .await;

    let big = pool(AGENTS, 110_000);
    let first = push(&d, &summary(AGENTS, 0, &big[..100_000])).await;
    let again = push(&d, &summary(AGENTS, 1, &big[10_000..])).await;
    let (full, reply) = pull(&d, "").await;
    println!(
        "  push of 100,000 new hashes {:.0} ms; re-push with 10,000 replaced {:.0} ms; whole pull of {} hashes {:.0} ms",
        first.as_secs_f64() * 1000.0,
        again.as_secs_f64() * 1000.0,
        reply["metadata"]["total_facts"],
        full.as_secs_f64() * 1000.0
    );
}

#[tokio::main]
async fn main() {
    api::install_tls_provider();
    run("SQLite (embedded default)", None).await;
    if let Ok(url) = std::env::var("DATABASE_URL")
        && !url.is_empty()
    {
        run("PostgreSQL", Some(&url)).await;
    }
}
