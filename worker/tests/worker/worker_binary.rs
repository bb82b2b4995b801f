//! The real `engram-worker` binary: connects to the configured backends, drains on SIGTERM,
//! and refuses bad configuration with exit code 2.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn engram_worker(env: &[(String, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_engram-worker"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn connects_then_stops_on_sigterm(env: Vec<(String, String)>) {
    let mut child = engram_worker(&env).args(["--concurrency", "2"]).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let connected = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("engram-worker connected") {
                return line;
            }
        }
        panic!("engram-worker exited before connecting");
    })
    .await
    .expect("connects within 30 s");
    assert!(connected.contains("concurrency=2"), "{connected}");
    std::process::Command::new("kill").args(["-TERM", &child.id().unwrap().to_string()]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn connects_to_the_embedded_backends() {
    let dir = tempfile::tempdir().unwrap();
    connects_then_stops_on_sigterm(vec![("ENGRAM_DATA_DIR".into(), dir.path().display().to_string())]).await;
}

#[tokio::test]
async fn connects_to_the_scale_out_backends() {
    let Some(database) = storage::testing::fresh_postgres_url().await else { return };
    let Some(redis) = storage::testing::redis_url() else { return };
    let Some(s3) = storage::testing::s3_env() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut env = vec![
        ("ENGRAM_DATA_DIR".to_string(), dir.path().display().to_string()),
        ("DATABASE_URL".to_string(), database),
        ("REDIS_URL".to_string(), redis),
    ];
    env.extend(s3);
    connects_then_stops_on_sigterm(env).await;
}

#[tokio::test]
async fn bad_configuration_exits_2_with_one_line() {
    let output = engram_worker(&[("SYNC_INTERVAL_MINUTES".into(), "soon".into())]).output().await.unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("SYNC_INTERVAL_MINUTES"), "{stderr}");
}
