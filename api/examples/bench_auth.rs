//! Password hashing benchmark (not a test): how long argon2id takes to hash and to verify
//! a password with Engram's parameters, on this machine. Run by `scripts/bench-auth.sh`.

use std::time::{Duration, Instant};

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let rounds = 30;
    let stored = api::auth::password::hash("correct horse battery".into()).await.unwrap();
    let (mut hashing, mut verifying) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = Instant::now();
        api::auth::password::hash("correct horse battery".into()).await.unwrap();
        hashing.push(started.elapsed());
        let started = Instant::now();
        assert!(
            api::auth::password::verify("correct horse battery".into(), Some(stored.clone())).await.unwrap()
        );
        verifying.push(started.elapsed());
    }
    for (what, samples) in [("hash", &mut hashing), ("verify", &mut verifying)] {
        println!(
            "argon2id {what:<6} over {rounds} runs: p50 {:>6.1} ms  p95 {:>6.1} ms",
            percentile(samples, 0.5).as_secs_f64() * 1000.0,
            percentile(samples, 0.95).as_secs_f64() * 1000.0
        );
    }
}
