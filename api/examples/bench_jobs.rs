//! Job engine benchmark (not a test): end-to-end throughput of no-op jobs (HTTP batch
//! enqueue → every job `succeeded` in Engram's records) on each backend with 1 and 2
//! `engram-worker` processes, and the latency of log lines from a worker process to an SSE
//! client of `engram-api`. Run by `scripts/bench-jobs.sh`, which starts the services and
//! builds the release binaries this drives.

#[path = "support/mod.rs"]
mod support;

use support::{ADMIN_KEY, admin_client, bin};

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

struct Stack {
    name: &'static str,
    env: Vec<(String, String)>,
}

fn spawn(program: &str, args: &[&str], env: &[(String, String)]) -> Child {
    Command::new(bin(program))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

async fn wait_up(client: &reqwest::Client, url: &str) {
    for _ in 0..300 {
        if client.get(format!("{url}/health")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not start");
}

async fn succeeded(client: &reqwest::Client, url: &str) -> i64 {
    let queues: Value =
        client.get(format!("{url}/api/v1/queues")).send().await.unwrap().json().await.unwrap();
    queues["queues"].as_array().unwrap().iter().map(|q| q["succeeded_last_hour"].as_i64().unwrap()).sum()
}

async fn fresh_stack(base: &Stack) -> (Vec<(String, String)>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut env = base.env.clone();
    env.push(("ENGRAM_DATA_DIR".into(), dir.path().display().to_string()));
    if env.iter().any(|(k, _)| k == "DATABASE_URL") {
        let url = storage::testing::fresh_postgres_url().await.expect("ENGRAM_TEST_POSTGRES_URL");
        env.retain(|(k, _)| k != "DATABASE_URL");
        env.push(("DATABASE_URL".into(), url));
    }
    env.push(("ENGRAM_REDIS_PREFIX".into(), format!("bench-{}", ulid::Ulid::generate())));
    env.push(("API_KEY".into(), ADMIN_KEY.into()));
    // No-op jobs exist for tests and benchmarks; one owner (the admin) submits every job, so
    // the per-owner running cap would measure the cap, not the engine.
    env.push(("ENGRAM_ENABLE_TEST_KINDS".into(), "true".into()));
    env.push(("ENGRAM_JOBS_MAX_RUNNING_PER_OWNER".into(), "0".into()));
    (env, dir)
}

/// A fresh deployment of `base` with `engram-api --no-worker` up: (its env, url, the API
/// process, the data dir to keep alive).
async fn start_api(base: &Stack) -> (Vec<(String, String)>, String, Child, tempfile::TempDir) {
    let (mut env, dir) = fresh_stack(base).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    env.push(("ENGRAM_BIND".into(), format!("127.0.0.1:{port}")));
    let url = format!("http://127.0.0.1:{port}");
    let api = spawn("engram-api", &["--no-worker"], &env);
    wait_up(&reqwest::Client::new(), &url).await;
    (env, url, api, dir)
}

/// Jobs per second from the first enqueue to the last success.
async fn throughput(base: &Stack, jobs: usize, workers: usize) -> f64 {
    let (env, url, _api, _dir) = start_api(base).await;
    let client = admin_client();
    let _workers: Vec<Child> =
        (0..workers).map(|_| spawn("engram-worker", &["--concurrency", "64"], &env)).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(5000) {
        let batch: Vec<Value> = chunk.iter().map(|_| json!({"kind": "noop"})).collect();
        let response = client
            .post(format!("{url}/api/v1/jobs/batch"))
            .json(&json!({"jobs": batch}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let enqueued = started.elapsed();
    while succeeded(&client, &url).await < jobs as i64 {
        assert!(started.elapsed() < Duration::from_secs(600), "did not drain");
        // Counting is a scan of the jobs table: poll gently so the benchmark measures the engine.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let elapsed = started.elapsed();
    let rate = jobs as f64 / elapsed.as_secs_f64();
    println!(
        "{:<16} jobs={jobs:<6} workers={workers}  enqueue {:>6.2} s  end to end {:>6.2} s  {:>7.0} jobs/s",
        base.name,
        enqueued.as_secs_f64(),
        elapsed.as_secs_f64(),
        rate
    );
    rate
}

/// Pick-up latency of single jobs: from `created_at` (the API's insert) to `started_at` (a
/// separate, idle `engram-worker` process claiming it), over `pushes` jobs pushed one by one.
async fn pickup_latency(base: &Stack, pushes: usize) {
    let (env, url, _api, _dir) = start_api(base).await;
    let client = admin_client();
    let _worker = spawn("engram-worker", &[], &env);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut latencies = Vec::with_capacity(pushes);
    for _ in 0..pushes {
        let reply: Value = client
            .post(format!("{url}/api/v1/jobs"))
            .json(&json!({"kind": "noop"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let job_url = format!("{url}/api/v1/jobs/{}", reply["job_id"].as_str().unwrap());
        let job = loop {
            let job: Value = client.get(&job_url).send().await.unwrap().json().await.unwrap();
            if job["status"] == "succeeded" {
                break job;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let at = |field: &str| job[field].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        latencies.push((at("started_at") - at("created_at")).num_milliseconds() as f64);
        // Spread the pushes over the poll interval instead of landing in step with it.
        tokio::time::sleep(Duration::from_millis(137)).await;
    }
    print_percentiles(&format!("{:<16} pick-up latency over {pushes} jobs", base.name), &mut latencies);
}

fn print_percentiles(label: &str, samples: &mut [f64]) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!("{label}: p50 {:.1} ms  p95 {:.1} ms  max {:.1} ms", at(0.5), at(0.95), at(1.0));
}

/// Log line latency from a worker process to an SSE client of the API.
async fn log_latency(base: &Stack, lines: usize) {
    let (env, url, _api, _dir) = start_api(base).await;
    let client = admin_client();
    let _worker = spawn("engram-worker", &[], &env);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let run_at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let body =
        json!({"kind": "noop", "run_at": run_at, "payload": {"log_lines": lines, "log_interval_ms": 10}});
    let reply: Value =
        client.post(format!("{url}/api/v1/jobs")).json(&body).send().await.unwrap().json().await.unwrap();
    let stream_url = format!("{url}{}", reply["events_url"].as_str().unwrap());
    let mut stream = client.get(stream_url).send().await.unwrap().bytes_stream();
    let mut buffer = String::new();
    let mut latencies = Vec::new();
    while let Some(chunk) = stream.next().await {
        let received = chrono::Utc::now();
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if frame.contains("event: end") {
                let label = format!("{:<16} SSE log latency over {} lines", base.name, latencies.len());
                print_percentiles(&label, &mut latencies);
                return;
            }
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: "))
                && frame.contains("event: log")
            {
                let line: Value = serde_json::from_str(data).unwrap();
                let at: chrono::DateTime<chrono::Utc> = line["at"].as_str().unwrap().parse().unwrap();
                latencies.push((received - at).num_microseconds().unwrap() as f64 / 1000.0);
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} is unset: run scripts/bench-jobs.sh"))
    };
    api::install_tls_provider();
    let postgres = var("ENGRAM_TEST_POSTGRES_URL");
    let redis = var("ENGRAM_TEST_REDIS_URL");
    let stacks = [
        Stack { name: "sqlite", env: vec![] },
        Stack { name: "postgres", env: vec![("DATABASE_URL".into(), postgres.clone())] },
        Stack {
            name: "postgres+redis",
            env: vec![("DATABASE_URL".into(), postgres), ("REDIS_URL".into(), redis)],
        },
    ];
    if std::env::args().nth(1).as_deref() == Some("latency") {
        for stack in &stacks {
            pickup_latency(stack, 50).await;
        }
        return;
    }
    let jobs: usize = std::env::args().nth(1).map(|n| n.parse().unwrap()).unwrap_or(20_000);
    // An optional second argument runs the throughput of that stack only (sqlite, postgres,
    // postgres+redis).
    if let Some(only) = std::env::args().nth(2) {
        let stack = stacks.iter().find(|s| s.name == only).expect("a stack name");
        for workers in [1, 2] {
            throughput(stack, jobs, workers).await;
        }
        return;
    }
    for stack in &stacks {
        for workers in [1, 2] {
            throughput(stack, jobs, workers).await;
        }
    }
    println!("-- the SQLite ack slowdown regression (apalis as shipped: ~340 jobs/s at 10,000)");
    throughput(&stacks[0], 10_000, 1).await;
    for stack in &stacks {
        pickup_latency(stack, 50).await;
    }
    for stack in &stacks[1..] {
        log_latency(stack, 200).await;
    }
}
