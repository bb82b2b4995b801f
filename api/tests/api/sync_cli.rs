//! `engram sync` end to end: the real binary keeps directories in sync through an in-process
//! server, on the embedded stack and on the scale-out services (PostgreSQL, Redis, S3); plus
//! the 412 races, driven through the library with a stale index.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use client::sync::remote::Remote;
use client::sync::{Options, Summary, Syncer};
use serde_json::{Value, json};

use crate::common;
use crate::common::{Stack, TestApp, spawn_app};

macro_rules! on_both_stacks {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test] async fn $case() { super::run(super::Stack::Embedded, super::$case).await })*
        }
        mod scale_out {
            $(#[tokio::test] async fn $case() { super::run(super::Stack::ScaleOut, super::$case).await })*
        }
    };
}

on_both_stacks!(
    creates_edits_and_deletes_travel_between_directories,
    conflicting_edits_keep_both_versions,
    nested_and_non_ascii_paths_round_trip,
    a_second_round_without_changes_does_nothing,
    a_rejected_path_is_reported_and_the_rest_syncs,
    lost_races_with_412_keep_both_versions,
    the_index_is_listed_whole_across_pages,
    watch_mode_syncs_until_interrupted,
);

/// A server and a user's API key with the `blobs:rw` scope.
struct Server {
    app: TestApp,
    token: String,
}

async fn run<F: std::future::Future<Output = ()>>(stack: Stack, case: impl FnOnce(Server) -> F) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let token = api_key(&app, "sync@example.com").await;
    case(Server { app, token }).await;
}

async fn api_key(app: &TestApp, email: &str) -> String {
    let body = json!({"email": email, "password": "correct horse battery"});
    let response = app.client.post(app.at("/api/v1/auth/register")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let session: Value = response.json().await.unwrap();
    let body = json!({"name": "sync test", "scopes": ["blobs:rw"]});
    let request = app.client.post(app.at("/api/v1/api-keys")).bearer_auth(session["token"].as_str().unwrap());
    let response = request.json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let key: Value = response.json().await.unwrap();
    key["secret"].as_str().unwrap().to_string()
}

/// What one run of the binary did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn summary(&self) -> &str {
        self.stdout.lines().last().unwrap_or_default()
    }
}

fn engram(args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(common::engram_client_binary());
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// One round of `engram sync dir`, the token passed in `ENGRAM_TOKEN`.
async fn sync(server: &Server, dir: &Path) -> Run {
    sync_with(&server.app.url, &server.token, dir).await
}

async fn sync_with(url: &str, token: &str, dir: &Path) -> Run {
    let args = ["sync", dir.to_str().unwrap(), "--server", url];
    let output =
        tokio::time::timeout(Duration::from_secs(60), engram(&args, &[("ENGRAM_TOKEN", token)]).output())
            .await
            .expect("a round ends within 60 s")
            .unwrap();
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A round that must succeed; returns its summary line.
async fn synced(server: &Server, dir: &Path) -> String {
    let run = sync(server, dir).await;
    assert_eq!(run.code, 0, "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    run.summary().to_string()
}

fn summary(
    uploaded: usize,
    downloaded: usize,
    deleted_here: usize,
    deleted_on_server: usize,
    conflicts: usize,
) -> String {
    let summary = Summary { uploaded, downloaded, deleted_here, deleted_on_server, conflicts, failed: 0 };
    format!("engram sync: {summary}")
}

fn write(dir: &Path, rel: &str, content: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// Every synced file in `dir` (state file left out) with its content.
fn contents(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            if path.is_dir() {
                walk(root, &path, out);
            } else if rel != ".engram-sync.json" {
                out.insert(rel, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn md5(content: &str) -> String {
    storage::blob::md5_hex(content.as_bytes())
}

/// The server's index for the test user: path → (md5, is_deleted).
async fn server_index(server: &Server) -> BTreeMap<String, (String, bool)> {
    let response =
        server.app.client.get(server.app.at("/sync")).bearer_auth(&server.token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let index: Value = response.json().await.unwrap();
    let files = index["files"].as_object().unwrap();
    files
        .iter()
        .map(|(path, entry)| {
            (
                path.clone(),
                (entry["md5"].as_str().unwrap().to_string(), entry["is_deleted"].as_bool().unwrap()),
            )
        })
        .collect()
}

async fn creates_edits_and_deletes_travel_between_directories(server: Server) {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(a.path(), "notes.md", "one");
    assert_eq!(synced(&server, a.path()).await, summary(1, 0, 0, 0, 0));
    assert_eq!(synced(&server, b.path()).await, summary(0, 1, 0, 0, 0));
    assert_eq!(contents(b.path()), BTreeMap::from([("notes.md".into(), "one".into())]));

    write(b.path(), "notes.md", "two");
    assert_eq!(synced(&server, b.path()).await, summary(1, 0, 0, 0, 0));
    assert_eq!(synced(&server, a.path()).await, summary(0, 1, 0, 0, 0));
    assert_eq!(contents(a.path()), BTreeMap::from([("notes.md".into(), "two".into())]));

    std::fs::remove_file(a.path().join("notes.md")).unwrap();
    assert_eq!(synced(&server, a.path()).await, summary(0, 0, 0, 1, 0));
    assert!(server_index(&server).await["notes.md"].1, "a tombstone on the server");
    assert_eq!(synced(&server, b.path()).await, summary(0, 0, 1, 0, 0));
    assert!(contents(b.path()).is_empty());
    assert_eq!(synced(&server, a.path()).await, summary(0, 0, 0, 0, 0));
}

async fn conflicting_edits_keep_both_versions(server: Server) {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(a.path(), "plan.md", "base");
    synced(&server, a.path()).await;
    synced(&server, b.path()).await;

    write(a.path(), "plan.md", "edited in A");
    write(b.path(), "plan.md", "edited in B");
    // Created on both sides before either synced: a conflict too.
    write(a.path(), "new.md", "new in A");
    write(b.path(), "new.md", "new in B");
    assert_eq!(synced(&server, a.path()).await, summary(2, 0, 0, 0, 0));
    let run = sync(&server, b.path()).await;
    assert_eq!((run.code, run.summary()), (0, summary(2, 0, 0, 0, 2).as_str()), "{}", run.stderr);
    assert!(run.stderr.contains("changed on both sides"), "conflicts are told: {}", run.stderr);
    assert_eq!(synced(&server, a.path()).await, summary(0, 2, 0, 0, 0));

    let expected = BTreeMap::from([
        ("new.md".to_string(), "new in A".to_string()),
        (format!("new.md.conflict-{}", md5("new in B")), "new in B".to_string()),
        ("plan.md".to_string(), "edited in A".to_string()),
        (format!("plan.md.conflict-{}", md5("edited in B")), "edited in B".to_string()),
    ]);
    assert_eq!(contents(a.path()), expected);
    assert_eq!(contents(b.path()), expected, "both directories hold both versions");
    for dir in [a.path(), b.path()] {
        assert_eq!(synced(&server, dir).await, summary(0, 0, 0, 0, 0));
    }
}

async fn nested_and_non_ascii_paths_round_trip(server: Server) {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let files = [
        ("memory/topics/knowledge/ai.md", "deep"),
        ("Grüße/naïve café – 日本語.txt", "unicode"),
        ("odd names/100% #1? a&b=c;d+e.txt", "reserved characters"),
        (".hidden", "dotfile"),
        ("empty", ""),
    ];
    for (path, content) in files {
        write(a.path(), path, content);
    }
    assert_eq!(synced(&server, a.path()).await, summary(files.len(), 0, 0, 0, 0));
    let index = server_index(&server).await;
    let expected: BTreeMap<String, String> =
        files.iter().map(|(p, c)| (p.to_string(), c.to_string())).collect();
    let on_server: BTreeMap<String, String> =
        index.iter().map(|(p, (md5, _))| (p.clone(), md5.clone())).collect();
    let expected_md5s = expected.iter().map(|(p, c)| (p.clone(), md5(c))).collect::<BTreeMap<_, _>>();
    assert_eq!(on_server, expected_md5s, "the server holds the exact paths");
    assert_eq!(synced(&server, b.path()).await, summary(0, files.len(), 0, 0, 0));
    assert_eq!(contents(b.path()), expected);

    std::fs::remove_dir_all(b.path().join("Grüße")).unwrap();
    assert_eq!(synced(&server, b.path()).await, summary(0, 0, 0, 1, 0));
    assert_eq!(synced(&server, a.path()).await, summary(0, 0, 1, 0, 0));
    assert!(!a.path().join("Grüße").exists(), "emptied directories go too");
}

async fn a_second_round_without_changes_does_nothing(server: Server) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", "alpha");
    write(dir.path(), "sub/b.txt", "beta");
    // The token may also come as --token.
    let args = ["sync", dir.path().to_str().unwrap(), "--server", &server.app.url, "--token", &server.token];
    let output = engram(&args, &[]).output().await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), summary(2, 0, 0, 0, 0));

    let state_path = dir.path().join(".engram-sync.json");
    let state: Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    assert_eq!(state["server"], server.app.url.as_str());
    assert_eq!(state["files"], json!({"a.txt": md5("alpha"), "sub/b.txt": md5("beta")}));
    assert!(state["cursor"].is_number() || state["cursor"].is_string(), "{state}");
    assert_eq!(synced(&server, dir.path()).await, summary(0, 0, 0, 0, 0));
    let again: Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    assert_eq!(again["files"], state["files"]);
    assert!(!server_index(&server).await.contains_key(".engram-sync.json"), "the state file stays local");

    // Another user's token: that user's namespace is empty, yet nothing local is deleted.
    let other = api_key(&server.app, "other@example.com").await;
    let run = sync_with(&server.app.url, &other, dir.path()).await;
    assert_eq!((run.code, run.summary()), (0, summary(2, 0, 0, 0, 0).as_str()), "{}", run.stderr);
    assert!(run.stderr.contains("another user; starting afresh"), "{}", run.stderr);
    assert_eq!(contents(dir.path()).len(), 2);

    let run = sync_with(&server.app.url, "ek_not-a-real-key", dir.path()).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("refused the token"), "{}", run.stderr);
    let nobody = format!("http://127.0.0.1:{}", common::free_port());
    let run = sync_with(&nobody, &server.token, dir.path()).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("cannot reach the server"), "{}", run.stderr);
}

async fn a_rejected_path_is_reported_and_the_rest_syncs(server: Server) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "fine.txt", "ok");
    write(dir.path(), "bell\u{7}name.txt", "control character");
    let run = sync(&server, dir.path()).await;
    assert_eq!(run.code, client::sync::EXIT_PARTIAL as i32, "{}\n{}", run.stdout, run.stderr);
    assert!(run.summary().contains("1 uploaded") && run.summary().contains("1 failed"), "{}", run.stdout);
    assert!(run.stderr.contains("bell\\u{7}name.txt") && run.stderr.contains("400"), "{}", run.stderr);
    assert_eq!(server_index(&server).await.keys().collect::<Vec<_>>(), ["fine.txt"]);
}

async fn lost_races_with_412_keep_both_versions(server: Server) {
    let dir = tempfile::tempdir().unwrap();
    let url = server.app.url.clone();
    let options = Options { dir: dir.path().to_path_buf(), server: url.clone(), token: server.token.clone() };
    let mut syncer = Syncer::open(options).await.unwrap();
    write(dir.path(), "edit.md", "base");
    write(dir.path(), "delete.md", "base");
    syncer.round().await.unwrap();

    // The index is listed, then another client writes both files before this one acts.
    let remote = Remote::new(&url, &server.token).unwrap();
    let stale = remote.index().await.unwrap();
    for path in ["edit.md", "delete.md"] {
        remote.put(path, b"from elsewhere".to_vec(), Some(&md5("base"))).await.unwrap();
    }
    write(dir.path(), "edit.md", "edited here");
    std::fs::remove_file(dir.path().join("delete.md")).unwrap();
    let summary = syncer.apply(stale).await.unwrap();
    assert_eq!(
        (summary.conflicts, summary.uploaded, summary.downloaded, summary.failed),
        (1, 1, 1, 0),
        "{summary}"
    );
    let copy = format!("edit.md.conflict-{}", md5("edited here"));
    let expected = BTreeMap::from([
        ("delete.md".to_string(), "from elsewhere".to_string()),
        (copy.clone(), "edited here".to_string()),
        ("edit.md".to_string(), "from elsewhere".to_string()),
    ]);
    assert_eq!(contents(dir.path()), expected, "a 412 loses nothing");
    assert_eq!(remote.get(&copy).await.unwrap().unwrap(), b"edited here");
    assert_eq!(syncer.round().await.unwrap(), Summary::default());
}

async fn watch_mode_syncs_until_interrupted(server: Server) {
    let dir = tempfile::tempdir().unwrap();
    let args =
        ["sync", dir.path().to_str().unwrap(), "--server", &server.app.url, "--watch", "--interval", "1"];
    let child = engram(&args, &[("ENGRAM_TOKEN", &server.token)]).spawn().unwrap();
    write(dir.path(), "later.txt", "written while watching");
    let started = Instant::now();
    while !server_index(&server).await.contains_key("later.txt") {
        assert!(started.elapsed() < Duration::from_secs(30), "the file reached the server within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("exits after Ctrl-C")
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.lines().all(|l| l.starts_with("engram sync: ")), "a summary line per round: {stdout}");
}

async fn the_index_is_listed_whole_across_pages(server: Server) {
    let dir = tempfile::tempdir().unwrap();
    for n in 0..7 {
        write(dir.path(), &format!("f{n}.txt"), &n.to_string());
    }
    synced(&server, dir.path()).await;
    std::fs::remove_file(dir.path().join("f3.txt")).unwrap();
    write(dir.path(), "f5.txt", "changed");
    synced(&server, dir.path()).await;

    let whole = Remote::new(&server.app.url, &server.token).unwrap().index().await.unwrap();
    let paged =
        Remote::new(&server.app.url, &server.token).unwrap().with_page_limit(2).index().await.unwrap();
    assert_eq!(whole.files.len(), 7);
    assert_eq!(whole.files["f3.txt"], None, "tombstones are listed");
    assert_eq!(whole.files["f5.txt"], Some(md5("changed")));
    assert_eq!(paged.files, whole.files);
    assert_eq!(paged.cursor, whole.cursor);
}
