//! Soak test of job delivery (not a benchmark): a fresh deployment driven by many concurrent
//! HTTP clients — tenants writing blobs, memories and git memory (process and commit
//! sessions, ingests, imports, index rebuilds) and an administrator submitting every other
//! kind (delayed, prioritised, failing-then-retried no-op jobs, upkeep) — for a bounded time.
//! Then every job must become final: it prints the largest pick-up delay per kind (a job's
//! start minus when it was due), the consumers' restarts, and exits non-zero when a job was
//! stranded. Run by `scripts/soak.sh` on SQLite, PostgreSQL and PostgreSQL + Redis.
//!
//!   soak [seconds per stack, default 200] [sqlite|postgres|postgres+redis ...]

#[path = "support/mod.rs"]
mod support;

use support::{ADMIN_KEY, admin_client, bin};

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// Tenants, each driven by `CLIENTS_PER_TENANT` concurrent clients.
const TENANTS: usize = 6;
const CLIENTS_PER_TENANT: usize = 3;
/// Concurrent administrator clients submitting jobs of the kinds tenants may not.
const ADMIN_CLIENTS: usize = 3;
/// Once the load stops, the backlog drains; jobs still not final when none has become final
/// for this long are stranded.
const NO_PROGRESS: Duration = Duration::from_secs(60);
/// The longest the drain may take however it progresses.
const MAX_DRAIN: Duration = Duration::from_secs(900);

struct Stack {
    name: &'static str,
    env: Vec<(String, String)>,
    /// `engram-worker` processes beside the API's in-process worker.
    extra_workers: usize,
}

fn stacks(wanted: &[String]) -> Vec<Stack> {
    let postgres = std::env::var("ENGRAM_TEST_POSTGRES_URL").ok();
    let redis = std::env::var("ENGRAM_TEST_REDIS_URL").ok();
    let mut all = vec![Stack { name: "sqlite", env: vec![], extra_workers: 0 }];
    if let Some(url) = &postgres {
        all.push(Stack {
            name: "postgres",
            env: vec![("DATABASE_URL".into(), url.clone())],
            extra_workers: 1,
        });
        if let Some(redis) = &redis {
            all.push(Stack {
                name: "postgres+redis",
                env: vec![("DATABASE_URL".into(), url.clone()), ("REDIS_URL".into(), redis.clone())],
                extra_workers: 1,
            });
        }
    }
    if wanted.is_empty() {
        return all;
    }
    for name in wanted {
        assert!(all.iter().any(|s| s.name == name), "stack {name} is unknown or its services are not set up");
    }
    all.into_iter().filter(|s| wanted.iter().any(|w| w == s.name)).collect()
}

fn spawn(program: &str, args: &[&str], env: &[(String, String)], log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(bin(program))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

/// A fresh deployment: its env, url, processes and data dir.
struct Deployment {
    url: String,
    log: std::path::PathBuf,
    _processes: Vec<Child>,
    _dir: tempfile::TempDir,
}

async fn deploy(stack: &Stack) -> Deployment {
    let dir = tempfile::tempdir().unwrap();
    let mut env = stack.env.clone();
    if env.iter().any(|(k, _)| k == "DATABASE_URL") {
        let url = storage::testing::fresh_postgres_url().await.expect("ENGRAM_TEST_POSTGRES_URL");
        env.retain(|(k, _)| k != "DATABASE_URL");
        env.push(("DATABASE_URL".into(), url));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    for (key, value) in [
        ("ENGRAM_DATA_DIR", dir.path().display().to_string()),
        ("ENGRAM_BIND", format!("127.0.0.1:{port}")),
        ("ENGRAM_REDIS_PREFIX", format!("soak-{}", ulid::Ulid::generate())),
        ("API_KEY", ADMIN_KEY.to_string()),
        ("ENGRAM_ENABLE_TEST_KINDS", "true".to_string()),
        ("REGISTER_RATE_LIMIT", "1000".to_string()),
        ("MEMORY_INGEST_RATE_LIMIT", "100000".to_string()),
        ("MEMORY_IMPORT_RATE_LIMIT", "100000".to_string()),
        ("MEMORY_SEARCH_RATE_LIMIT", "100000".to_string()),
        ("LOG_LEVEL", "warn".to_string()),
    ] {
        env.push((key.to_string(), value));
    }
    let log = dir.path().join("processes.log");
    let mut processes = vec![spawn("engram-api", &[], &env, &log)];
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if client.get(format!("{url}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..stack.extra_workers {
        processes.push(spawn("engram-worker", &["--concurrency", "8"], &env, &log));
    }
    Deployment { url, log, _processes: processes, _dir: dir }
}

/// A registered tenant: its id and a client sending its token.
struct Tenant {
    id: String,
    client: reqwest::Client,
}

async fn register(url: &str, n: usize) -> Tenant {
    let email = format!("soak-{n}-{}@example.com", ulid::Ulid::generate().to_string().to_lowercase());
    let response = reqwest::Client::new()
        .post(format!("{url}/api/v1/auth/register"))
        .json(&json!({"email": email, "password": "a soak test password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "registration: {}", response.text().await.unwrap_or_default());
    let registered: Value = response.json().await.unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    let token = registered["token"].as_str().unwrap();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    let client =
        reqwest::Client::builder().default_headers(headers).timeout(Duration::from_secs(90)).build().unwrap();
    let id = registered["user"]["id"].as_str().unwrap().to_string();
    let setup = client.post(format!("{url}/repos/setup")).json(&json!({"user_id": id})).send().await.unwrap();
    assert!(setup.status().is_success(), "repo setup: {}", setup.status());
    Tenant { id, client }
}

/// Answers by status, for the summary: unexpected ones are shown, they are not failures of
/// delivery (a 409 for a session another client committed is expected, for instance).
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    server_errors: AtomicU64,
}

fn word() -> &'static str {
    const WORDS: [&str; 12] = [
        "Alice", "Bob", "garden", "Paris", "sister", "hiking", "coffee", "Rust", "piano", "Tokyo", "mother",
        "chess",
    ];
    WORDS[rand::random_range(0..WORDS.len())]
}

fn sentence() -> String {
    format!("I talked with {} about {} and {} today.", word(), word(), word())
}

/// One request of a tenant's, picked at random.
async fn tenant_step(url: &str, tenant: &Tenant, step: u64) -> reqwest::Result<reqwest::StatusCode> {
    let client = &tenant.client;
    let user = &tenant.id;
    let response = match rand::random_range(0..14) {
        0 | 1 => {
            let path = format!("{url}/blob/soak/{}.txt", rand::random_range(0..50));
            client.put(path).body(sentence()).send().await?
        }
        2 => client.get(format!("{url}/blob/soak/{}.txt", rand::random_range(0..50))).send().await?,
        3 => client.delete(format!("{url}/blob/soak/{}.txt", rand::random_range(0..50))).send().await?,
        4 => client.get(format!("{url}/sync")).send().await?,
        5 => {
            let memory =
                json!({"content": sentence(), "type": "fact", "scope": "user_global", "tags": [word()]});
            client.post(format!("{url}/api/v1/memories")).json(&memory).send().await?
        }
        6 => {
            let query = json!({"query": word(), "limit": 5});
            client.post(format!("{url}/api/v1/memories/search")).json(&query).send().await?
        }
        7 => {
            let session = format!("s-{step}-{}", rand::random_range(0..1_000_000));
            let input = json!({"user_id": user, "session_id": session, "memory_input": sentence()});
            let processed = client.post(format!("{url}/memory/process-session")).json(&input).send().await?;
            if !processed.status().is_success() {
                return Ok(processed.status());
            }
            let commit = json!({"user_id": user, "session_id": session});
            client.post(format!("{url}/memory/commit-session")).json(&commit).send().await?
        }
        8 => {
            let input =
                json!({"user_id": user, "session_id": format!("pc-{step}"), "memory_input": sentence()});
            client.post(format!("{url}/memory/process-and-commit")).json(&input).send().await?
        }
        9 => {
            let query = json!({"user_id": user, "query": word()});
            client.post(format!("{url}/memory/search")).json(&query).send().await?
        }
        10 => {
            let text = format!("User: {}\nAssistant: Noted. {}", sentence(), sentence());
            let mut request =
                client.post(format!("{url}/api/v1/memories/ingest")).json(&json!({"conversationText": text}));
            if rand::random::<bool>() {
                request = request.header("prefer", "respond-async");
            }
            request.send().await?
        }
        11 => {
            let items: Vec<Value> = (0..70)
                .map(|i| json!({"content": format!("{} ({i})", sentence()), "type": "fact"}))
                .collect();
            client
                .post(format!("{url}/api/v1/memories/import"))
                .header("prefer", "respond-async")
                .json(&json!({"memories": items}))
                .send()
                .await?
        }
        12 => {
            let kind = ["rebuild_index", "repo_sync"][rand::random_range(0..2)];
            let job = json!({"kind": kind, "payload": {"user_id": user}});
            client.post(format!("{url}/api/v1/jobs")).json(&job).send().await?
        }
        _ => {
            let job = json!({"kind": "index_memory_vectors", "payload": {}});
            client.post(format!("{url}/api/v1/jobs")).json(&job).send().await?
        }
    };
    Ok(response.status())
}

/// One job of the administrator's: no-op jobs of every shape, and the upkeep kinds.
async fn admin_step(url: &str, client: &reqwest::Client) -> reqwest::Result<reqwest::StatusCode> {
    let job = match rand::random_range(0..10) {
        0 => json!({"kind": "tombstone_gc", "payload": {}}),
        1 => json!({"kind": "blob_repair", "payload": {}}),
        2 => json!({"kind": "noop", "payload": {"fail_attempts": 1}}),
        3 => json!({"kind": "noop", "run_at": (Utc::now() + chrono::Duration::seconds(3)).to_rfc3339()}),
        4 => json!({"kind": "noop", "priority": 5, "payload": {"sleep_ms": 20}}),
        5 => {
            let batch: Vec<Value> = (0..5).map(|_| json!({"kind": "noop"})).collect();
            return Ok(client
                .post(format!("{url}/api/v1/jobs/batch"))
                .json(&json!({"jobs": batch}))
                .send()
                .await?
                .status());
        }
        _ => json!({"kind": "noop", "payload": {"sleep_ms": rand::random_range(0..300), "log_lines": 2}}),
    };
    Ok(client.post(format!("{url}/api/v1/jobs")).json(&job).send().await?.status())
}

async fn drive(url: &str, tenants: &[Arc<Tenant>], load_for: Duration) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + load_for;
    let mut clients = tokio::task::JoinSet::new();
    for tenant in tenants {
        for _ in 0..CLIENTS_PER_TENANT {
            let (url, tenant, tally) = (url.to_string(), tenant.clone(), tally.clone());
            clients.spawn(async move {
                let mut step = 0;
                while Instant::now() < deadline {
                    step += 1;
                    count(&tally, tenant_step(&url, &tenant, step).await);
                }
            });
        }
    }
    for _ in 0..ADMIN_CLIENTS {
        let (url, tally) = (url.to_string(), tally.clone());
        clients.spawn(async move {
            let client = admin_client();
            while Instant::now() < deadline {
                count(&tally, admin_step(&url, &client).await);
                tokio::time::sleep(Duration::from_millis(rand::random_range(50..250))).await;
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    tally
}

fn count(tally: &Tally, answer: reqwest::Result<reqwest::StatusCode>) {
    tally.requests.fetch_add(1, Ordering::Relaxed);
    match answer {
        Ok(status) if status.is_server_error() => {
            tally.server_errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("  answer {status}");
        }
        Ok(_) => {}
        Err(e) => {
            tally.server_errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("  request failed: {e}");
        }
    }
}

/// Every job of the deployment (the administrator sees every tenant's).
async fn all_jobs(url: &str, client: &reqwest::Client) -> Vec<Value> {
    let mut jobs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = client.get(format!("{url}/api/v1/jobs")).query(&[("limit", "1000")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let page: Value = request.send().await.unwrap().json().await.unwrap();
        jobs.extend(page["jobs"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return jobs,
        }
    }
}

fn is_final(job: &Value) -> bool {
    // `failed` waits for a retry.
    matches!(job["status"].as_str(), Some("succeeded" | "dead" | "cancelled"))
}

fn time(job: &Value, field: &str) -> Option<DateTime<Utc>> {
    job[field].as_str().and_then(|t| t.parse().ok())
}

/// Largest pick-up delay and job count per kind.
fn pick_up_delays(jobs: &[Value]) -> BTreeMap<String, (usize, Duration)> {
    let mut kinds: BTreeMap<String, (usize, Duration)> = BTreeMap::new();
    for job in jobs {
        let entry = kinds.entry(job["kind"].as_str().unwrap_or("?").to_string()).or_default();
        entry.0 += 1;
        let (Some(started), Some(created), Some(run_at)) =
            (time(job, "started_at"), time(job, "created_at"), time(job, "run_at"))
        else {
            continue;
        };
        let due = created.max(run_at);
        let delay = (started - due).to_std().unwrap_or_default();
        entry.1 = entry.1.max(delay);
    }
    kinds
}

async fn soak(stack: &Stack, load_for: Duration) -> bool {
    let deployment = deploy(stack).await;
    let url = deployment.url.as_str();
    let mut tenants = Vec::new();
    for n in 0..TENANTS {
        tenants.push(Arc::new(register(url, n).await));
    }
    let started = Instant::now();
    let tally = drive(url, &tenants, load_for).await;
    let load = started.elapsed();
    let admin = admin_client();
    let (drain_started, mut progressed_at, mut open) = (Instant::now(), Instant::now(), usize::MAX);
    let jobs = loop {
        let jobs = all_jobs(url, &admin).await;
        let still_open = jobs.iter().filter(|j| !is_final(j)).count();
        if still_open < open {
            (open, progressed_at) = (still_open, Instant::now());
        }
        if still_open == 0 || progressed_at.elapsed() > NO_PROGRESS || drain_started.elapsed() > MAX_DRAIN {
            break jobs;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let drain = started.elapsed() - load;
    let stranded: Vec<&Value> = jobs.iter().filter(|j| !is_final(j)).collect();
    let workers: Value =
        admin.get(format!("{url}/api/v1/workers")).send().await.unwrap().json().await.unwrap();
    let restarts: u64 = workers["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|w| w["consumers"].as_array().cloned().unwrap_or_default())
        .map(|c| c["restarts"].as_u64().unwrap_or(0))
        .sum();
    let health: Value = admin.get(format!("{url}/health")).send().await.unwrap().json().await.unwrap();
    println!(
        "{:<15} load {:>4.0} s, {} requests ({} 5xx or failed), {} jobs, all final {:.0} s after the load; \
         consumer restarts {restarts}; health {}",
        stack.name,
        load.as_secs_f64(),
        tally.requests.load(Ordering::Relaxed),
        tally.server_errors.load(Ordering::Relaxed),
        jobs.len(),
        drain.as_secs_f64(),
        health["status"],
    );
    for (kind, (count, delay)) in pick_up_delays(&jobs) {
        println!("    {kind:<22} {count:>6} jobs, largest pick-up delay {:>7.2} s", delay.as_secs_f64());
    }
    for job in stranded.iter().take(20) {
        println!("    STRANDED {} {} {} attempt {}", job["id"], job["kind"], job["status"], job["attempt"]);
    }
    if restarts > 0 {
        let log = std::fs::read_to_string(&deployment.log).unwrap_or_default();
        let mut why: BTreeMap<String, usize> = BTreeMap::new();
        for line in log.lines().filter(|l| l.contains("the job consumer stopped")) {
            let reason = line.split("the job consumer stopped: ").nth(1).unwrap_or(line);
            let reason = reason.split("; starting a new one").next().unwrap_or(reason);
            *why.entry(reason.chars().take(160).collect()).or_default() += 1;
        }
        for (reason, count) in why {
            println!("    restarted {count}× : {reason}");
        }
    }
    if !stranded.is_empty() {
        println!("    {} jobs stranded; the processes' log: {}", stranded.len(), deployment.log.display());
        let log = std::fs::read_to_string(&deployment.log).unwrap_or_default();
        for line in log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev() {
            println!("      {line}");
        }
    }
    stranded.is_empty()
}

#[tokio::main]
async fn main() {
    api::install_tls_provider();
    let mut args = std::env::args().skip(1).peekable();
    let seconds: u64 = match args.peek().and_then(|a| a.parse().ok()) {
        Some(seconds) => {
            args.next();
            seconds
        }
        None => 200,
    };
    let wanted: Vec<String> = args.collect();
    let mut passed = true;
    for stack in stacks(&wanted) {
        passed &= soak(&stack, Duration::from_secs(seconds)).await;
    }
    if !passed {
        eprintln!("soak: jobs were stranded");
        std::process::exit(1);
    }
}
