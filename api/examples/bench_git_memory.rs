//! Git memory benchmark (not a test): a generated corpus of 2,000 and 5,000 blocks in a
//! user's memory repo, the index rebuild time, `/memory/search` latency over HTTP (p50/p95
//! over sequential requests from one client) and the time of one incremental update (a
//! session processed and committed: git commit + index update). Run by
//! `scripts/bench-git-memory.sh`, which builds the release binary this drives.

#[path = "support/mod.rs"]
mod support;

use support::{ADMIN_KEY, admin_client, bin};

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

const BLOCKS_PER_FILE: usize = 10;
const SEARCHES: usize = 1000;

/// A deterministic pseudo-random sequence (xorshift), so every run indexes the same corpus.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Skewed towards small numbers, like word frequencies.
    fn skewed(&mut self, below: usize) -> usize {
        let a = self.next() as usize % below;
        let b = self.next() as usize % below;
        a.min(b)
    }
}

fn vocabulary(size: usize) -> Vec<String> {
    const SYLLABLES: &[&str] = &[
        "ka", "lo", "mi", "ren", "tas", "vel", "dor", "pi", "sun", "ber", "gal", "tho", "nex", "qua", "ril",
        "mon",
    ];
    let mut rng = Rng(0x1234_5678_9abc_def1);
    (0..size)
        .map(|_| (0..2 + rng.next() % 2).map(|_| SYLLABLES[rng.next() as usize % SYLLABLES.len()]).collect())
        .collect()
}

/// Entity files holding `blocks` blocks of about 40 words each.
fn corpus(blocks: usize, words: &[String]) -> Vec<(String, String)> {
    let mut rng = Rng(0x0bad_cafe_f00d_d00d);
    let mut files = Vec::new();
    for file in 0..blocks.div_ceil(BLOCKS_PER_FILE) {
        let mut text = format!("# Entity {file}\n");
        for block in 0..BLOCKS_PER_FILE.min(blocks - file * BLOCKS_PER_FILE) {
            let strength = ["High", "Medium", "Low"][block % 3];
            let core = if block == 0 { " [ALWAYS_LOAD]" } else { "" };
            let body: Vec<&str> = (0..40).map(|_| words[rng.skewed(words.len())].as_str()).collect();
            text.push_str(&format!(
                "\n/START\n### Note {block} [Strength: {strength}]{core}\n{}\n/END\n",
                body.join(" ")
            ));
        }
        files.push((format!("memories/contexts/entity-{file}.md"), text));
    }
    files
}

async fn post(client: &reqwest::Client, url: &str, body: Value) -> Value {
    let response = client.post(url).json(&body).send().await.unwrap();
    let status = response.status();
    let reply: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {reply}");
    reply
}

fn job_millis(result_job: &Value) -> f64 {
    let at = |f: &str| result_job[f].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    (at("finished_at") - at("started_at")).num_microseconds().unwrap() as f64 / 1000.0
}

async fn job_of(client: &reqwest::Client, url: &str, reply: &Value) -> Value {
    let id = reply["job_id"].as_str().unwrap();
    loop {
        let job: Value =
            client.get(format!("{url}/api/v1/jobs/{id}")).send().await.unwrap().json().await.unwrap();
        if job["status"] == "succeeded" {
            return job;
        }
        assert!(job["status"] != "dead", "{job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(blocks: usize) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let _api: Child = Command::new(bin("engram-api"))
        .env("ENGRAM_DATA_DIR", dir.path())
        .env("ENGRAM_BIND", format!("127.0.0.1:{port}"))
        .env("API_KEY", ADMIN_KEY)
        .env("LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("engram-api starts");
    let client = admin_client();
    while client.get(format!("{url}/health")).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    post(&client, &format!("{url}/repos/setup"), json!({"user_id": "bench"})).await;
    let words = vocabulary(5000);
    let repo = dir.path().join("repos").join("bench");
    for (path, text) in corpus(blocks, &words) {
        let path = repo.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let rebuild = client
        .post(format!("{url}/memory/rebuild-index"))
        .header("Prefer", "respond-async")
        .json(&json!({"user_id": "bench"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let rebuilt = job_of(&client, &url, &rebuild).await;
    let indexed = rebuilt["result"]["index_stats"]["total_blocks"].as_u64().unwrap();

    let mut rng = Rng(42);
    let search_url = format!("{url}/memory/search");
    for _ in 0..50 {
        post(&client, &search_url, json!({"user_id": "bench", "query": words[rng.skewed(500)], "k": 5}))
            .await;
    }
    let mut latencies = Vec::with_capacity(SEARCHES);
    let mut hits = 0;
    for _ in 0..SEARCHES {
        let query: Vec<&str> = (0..3).map(|_| words[rng.skewed(words.len())].as_str()).collect();
        let started = Instant::now();
        let reply =
            post(&client, &search_url, json!({"user_id": "bench", "query": query.join(" "), "k": 5})).await;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        hits += reply["results"].as_array().unwrap().len();
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];

    let session = json!({"user_id": "bench", "session_id": "bench-session",
        "memory_input": "Had coffee with mom today. Went running with Sarah before work."});
    let update = client
        .post(format!("{url}/memory/process-and-commit"))
        .header("Prefer", "respond-async")
        .json(&session)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let updated = job_of(&client, &url, &update).await;
    println!(
        "blocks={indexed:<5} rebuild {:>7.1} ms  search over HTTP p50 {:.2} ms  p95 {:.2} ms  max {:.2} ms ({:.1} hits/query)  session commit + index update {:>6.1} ms",
        job_millis(&rebuilt),
        at(0.5),
        at(0.95),
        at(1.0),
        hits as f64 / SEARCHES as f64,
        job_millis(&updated),
    );
}

#[tokio::main]
async fn main() {
    api::install_tls_provider();
    for blocks in [2000, 5000] {
        run(blocks).await;
    }
}
