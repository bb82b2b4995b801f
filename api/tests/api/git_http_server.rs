//! The git smart-HTTP stand-in (`common::git_http`) against the real `git` CLI: token auth,
//! clone, a push big enough to be chunked, and a pull of someone else's push.

use std::path::Path;
use std::process::Output;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::git_http::GitHttpServer;

const TOKEN: &str = "ghp_stand_in_token";

/// Runs the server's hermetic `git` with `args` without blocking the runtime the server is on.
async fn git(server: &GitHttpServer, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::from(server.git());
    command.args(args).output().await.expect("run git")
}

async fn git_ok(server: &GitHttpServer, args: &[&str]) -> String {
    let output = git(server, args).await;
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8 from git")
}

/// Clones `repo` over http with the right token into `<dir>/clone`.
async fn clone(server: &GitHttpServer, repo: &str, dir: &Path) -> String {
    let clone = dir.join("clone").to_str().expect("a UTF-8 path").to_string();
    git_ok(server, &["clone", "--quiet", &server.url_with_credentials(repo, "alice", TOKEN), &clone]).await;
    clone
}

/// Text that deflate cannot shrink much: base64 of `len` pseudo-random bytes.
fn incompressible_text(len: usize) -> String {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The status line and headers `GET <repo_url><path>` gets, without credentials.
async fn raw_get(repo_url: &str, path: &str) -> String {
    let (host, repo_path) = repo_url.strip_prefix("http://").unwrap().split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!("GET /{repo_path}{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response.split("\r\n\r\n").next().unwrap().to_string() + "\r\n"
}

#[tokio::test]
async fn clone_with_the_token_gets_the_files() {
    let server = GitHttpServer::start(TOKEN).await;
    server.create_repo("alice/memory", &[("README.md", "# memory\n"), ("notes/today.md", "- one\n")]);
    let dir = tempfile::tempdir().unwrap();
    let clone = clone(&server, "alice/memory", dir.path()).await;

    assert_eq!(std::fs::read_to_string(format!("{clone}/README.md")).unwrap(), "# memory\n");
    assert_eq!(std::fs::read_to_string(format!("{clone}/notes/today.md")).unwrap(), "- one\n");
    assert_eq!(git_ok(&server, &["-C", &clone, "branch", "--show-current"]).await.trim(), "main");
    let (sha, message) = server.head_commit("alice/memory", "main").unwrap();
    assert_eq!(git_ok(&server, &["-C", &clone, "rev-parse", "HEAD"]).await.trim(), sha);
    assert_eq!(message, "initial commit");
    assert_eq!(server.read_file("alice/memory", "main", "notes/today.md").as_deref(), Some("- one\n"));
    assert_eq!(server.read_file("alice/memory", "main", "missing.md"), None);
    assert_eq!(server.head_commit("alice/memory", "other"), None);
    assert_eq!(server.head_commit("bob/memory", "main"), None);
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_401() {
    let server = GitHttpServer::start(TOKEN).await;
    server.create_repo("alice/memory", &[("README.md", "# memory\n")]);
    let dir = tempfile::tempdir().unwrap();

    let wrong = server.url_with_credentials("alice/memory", "alice", "ghp_revoked");
    let target = dir.path().join("wrong").to_str().unwrap().to_string();
    let output = git(&server, &["clone", &wrong, &target]).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Authentication failed"), "{stderr}");
    assert!(server.unauthorized_seen() >= 1);

    let head = raw_get(&server.url("alice/memory"), "/info/refs?service=git-upload-pack").await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(head.to_ascii_lowercase().contains("www-authenticate: basic realm=\"git\"\r\n"), "{head}");

    let unauthorized = server.unauthorized_seen();
    let output = git(&server, &["ls-remote", &server.url("alice/memory")]).await;
    assert!(!output.status.success(), "no credentials, no prompt");
    assert_eq!(server.unauthorized_seen(), unauthorized + 1);
}

#[tokio::test]
async fn a_push_over_one_mib_reaches_the_remote_and_a_pull_sees_others_pushes() {
    let server = GitHttpServer::start(TOKEN).await;
    server.create_repo("alice/memory", &[("README.md", "# memory\n")]);
    let dir = tempfile::tempdir().unwrap();
    let clone = clone(&server, "alice/memory", dir.path()).await;

    let big = incompressible_text(1536 * 1024);
    std::fs::write(format!("{clone}/big.txt"), &big).unwrap();
    git_ok(&server, &["-C", &clone, "add", "big.txt"]).await;
    git_ok(&server, &["-C", &clone, "commit", "--quiet", "-m", "add a big file"]).await;
    git_ok(&server, &["-C", &clone, "push", "--quiet", "origin", "main"]).await;

    assert!(server.chunked_seen() >= 1, "a pack over 1 MiB goes chunked");
    let (sha, message) = server.head_commit("alice/memory", "main").unwrap();
    assert_eq!(git_ok(&server, &["-C", &clone, "rev-parse", "HEAD"]).await.trim(), sha);
    assert_eq!(message, "add a big file");
    assert!(server.read_file("alice/memory", "main", "big.txt") == Some(big), "the big file arrived intact");

    let theirs =
        server.push_change("alice/memory", "notes/theirs.md", "from elsewhere\n", "someone else's edit");
    assert_eq!(
        server.head_commit("alice/memory", "main").unwrap(),
        (theirs.clone(), "someone else's edit".into())
    );
    git_ok(&server, &["-C", &clone, "pull", "--quiet", "--ff-only"]).await;
    assert_eq!(git_ok(&server, &["-C", &clone, "rev-parse", "HEAD"]).await.trim(), theirs);
    assert_eq!(std::fs::read_to_string(format!("{clone}/notes/theirs.md")).unwrap(), "from elsewhere\n");
    assert!(server.requests_seen() > server.unauthorized_seen());
}
