//! A git smart-HTTP server with token auth in front of `git http-backend`: a local stand-in
//! for GitHub's https remotes, so the git memory service can clone, pull and push over the
//! network in tests.
//!
//! Any username is accepted; the password must be the token. Missing or wrong credentials get
//! `401` with `WWW-Authenticate: Basic realm="git"`. The repos live in a temp dir of the
//! server's own; the helpers that create or inspect them use the git CLI on the local path, so
//! they block: call them from a test body, never from a task the server needs to run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// Author and committer of every commit the helpers make.
const IDENTITY: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "Engram Test"),
    ("GIT_AUTHOR_EMAIL", "test@engram.invalid"),
    ("GIT_COMMITTER_NAME", "Engram Test"),
    ("GIT_COMMITTER_EMAIL", "test@engram.invalid"),
];

/// A running server; stops and deletes its repos when dropped.
pub(crate) struct GitHttpServer {
    addr: SocketAddr,
    dir: TempDir,
    counters: Arc<Counters>,
    server: JoinHandle<()>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicUsize,
    unauthorized: AtomicUsize,
    chunked: AtomicUsize,
}

/// What the request handler needs.
#[derive(Clone)]
struct Backend {
    project_root: PathBuf,
    home: PathBuf,
    token: Arc<str>,
    counters: Arc<Counters>,
}

impl GitHttpServer {
    /// Serves an empty project root on `127.0.0.1`, port 0, accepting `token` as password.
    pub(crate) async fn start(token: &str) -> GitHttpServer {
        let dir = tempfile::tempdir().expect("create the git server's dir");
        let backend = Backend {
            project_root: dir.path().join("repos"),
            home: dir.path().join("home"),
            token: token.into(),
            counters: Arc::default(),
        };
        std::fs::create_dir(&backend.project_root).expect("create the project root");
        std::fs::create_dir(&backend.home).expect("create the git home");
        let counters = backend.counters.clone();
        let app = Router::new().fallback(serve_git).with_state(backend);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the git server");
        let addr = listener.local_addr().expect("the git server's address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .await
                .expect("serve git over http");
        });
        GitHttpServer { addr, dir, counters, server }
    }

    /// `http://127.0.0.1:PORT/<repo>.git`, without credentials.
    pub(crate) fn url(&self, repo: &str) -> String {
        format!("http://{}/{repo}.git", self.addr)
    }

    /// `url(repo)` with `user:password@` in it, as a git client would be given it.
    pub(crate) fn url_with_credentials(&self, repo: &str, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}/{repo}.git", self.addr)
    }

    /// The bare repo behind `url(repo)` on the local filesystem.
    pub(crate) fn repo_path(&self, repo: &str) -> PathBuf {
        self.dir.path().join("repos").join(format!("{repo}.git"))
    }

    /// A `git` command that reads no system or user config, never prompts and commits as a
    /// fixed identity; use it as the client too (`tokio::process::Command::from` it there).
    pub(crate) fn git(&self) -> Command {
        git_command(&self.dir.path().join("home"))
    }

    /// Creates the bare repo `<repo>.git` on branch `main` with one commit holding `files`
    /// (`(path, contents)`), pushable over http.
    pub(crate) fn create_repo(&self, repo: &str, files: &[(&str, &str)]) -> PathBuf {
        let bare = self.repo_path(repo);
        assert!(!bare.exists(), "repo {repo} exists already");
        run(self.git().args(["-c", "init.defaultBranch=main", "init", "--quiet", "--bare"]).arg(&bare));
        run(self.git().arg("-C").arg(&bare).args(["config", "http.receivepack", "true"]));

        let work = tempfile::tempdir_in(self.dir.path()).expect("create a scratch dir");
        run(self.git().args(["-c", "init.defaultBranch=main", "init", "--quiet"]).arg(work.path()));
        for (path, contents) in files {
            write_file(work.path(), path, contents);
        }
        run(self.git().arg("-C").arg(work.path()).args(["add", "--all"]));
        run(self.git().arg("-C").arg(work.path()).args([
            "commit",
            "--quiet",
            "--allow-empty",
            "-m",
            "initial commit",
        ]));
        run(self.git().arg("-C").arg(work.path()).args(["push", "--quiet"]).arg(&bare).arg("main"));
        bare
    }

    /// Commits `contents` at `path` onto the repo's default branch through the filesystem, as
    /// someone else pushing; returns the new commit's sha.
    pub(crate) fn push_change(&self, repo: &str, path: &str, contents: &str, message: &str) -> String {
        let scratch = tempfile::tempdir_in(self.dir.path()).expect("create a scratch dir");
        let work = scratch.path().join("work");
        run(self.git().args(["clone", "--quiet"]).arg(self.repo_path(repo)).arg(&work));
        write_file(&work, path, contents);
        run(self.git().arg("-C").arg(&work).args(["add", "--all"]));
        run(self.git().arg("-C").arg(&work).args(["commit", "--quiet", "-m", message]));
        run(self.git().arg("-C").arg(&work).args(["push", "--quiet", "origin", "HEAD"]));
        run(self.git().arg("-C").arg(&work).args(["rev-parse", "HEAD"])).trim().to_string()
    }

    /// `(sha, message)` of `branch`'s head, or `None` when the repo or branch does not exist.
    pub(crate) fn head_commit(&self, repo: &str, branch: &str) -> Option<(String, String)> {
        let sha = self.resolve(repo, &format!("refs/heads/{branch}^{{commit}}"))?;
        let message =
            run(self.git().arg("-C").arg(self.repo_path(repo)).args(["log", "-1", "--format=%B", &sha]));
        Some((sha, message.trim_end().to_string()))
    }

    /// The file at `path` on `branch`, or `None` when the repo, branch or file does not exist.
    pub(crate) fn read_file(&self, repo: &str, branch: &str, path: &str) -> Option<String> {
        let blob = self.resolve(repo, &format!("refs/heads/{branch}:{path}"))?;
        let contents = run(self.git().arg("-C").arg(self.repo_path(repo)).args(["cat-file", "blob", &blob]));
        Some(contents)
    }

    /// Requests received, authorised or not.
    pub(crate) fn requests_seen(&self) -> usize {
        self.counters.requests.load(Ordering::SeqCst)
    }

    /// Requests answered `401`. A client given good credentials still gets one now and then:
    /// curl sends its first request without them and answers the challenge.
    pub(crate) fn unauthorized_seen(&self) -> usize {
        self.counters.unauthorized.load(Ordering::SeqCst)
    }

    /// Authorised requests that came with a chunked body (git chunks pushes over 1 MiB).
    pub(crate) fn chunked_seen(&self) -> usize {
        self.counters.chunked.load(Ordering::SeqCst)
    }

    /// The object `rev` names in `repo`, or `None` when the repo or the object does not exist.
    fn resolve(&self, repo: &str, rev: &str) -> Option<String> {
        let bare = self.repo_path(repo);
        if !bare.is_dir() {
            return None;
        }
        let output = output(self.git().arg("-C").arg(&bare).args(["rev-parse", "--verify", "--quiet", rev]));
        match output.status.code() {
            Some(0) => Some(String::from_utf8(output.stdout).expect("a sha").trim().to_string()),
            Some(1) => None,
            _ => panic!(
                "git rev-parse {rev} in {}: {}",
                bare.display(),
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// `git` with a clean environment: no system or global config, no prompts, a fixed identity.
fn git_command(home: &Path) -> Command {
    let mut git = Command::new("git");
    git.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .envs(IDENTITY);
    git
}

fn output(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|err| panic!("run {command:?}: {err}"))
}

/// Runs `command`, panicking with its stderr when it fails; returns its stdout.
fn run(command: &mut Command) -> String {
    let output = output(command);
    assert!(output.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap_or_else(|err| panic!("{command:?} printed non-UTF-8: {err}"))
}

fn write_file(work: &Path, path: &str, contents: &str) {
    let file = work.join(path);
    std::fs::create_dir_all(file.parent().expect("a file in a dir")).expect("create the file's dir");
    std::fs::write(&file, contents).unwrap_or_else(|err| panic!("write {}: {err}", file.display()));
}

async fn serve_git(
    State(backend): State<Backend>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    backend.counters.requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let Some(user) = authorized_user(&parts.headers, &backend.token) else {
        backend.counters.unauthorized.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"git\"")],
            "authentication required\n",
        )
            .into_response();
    };
    let chunked =
        parts.headers.get(header::TRANSFER_ENCODING).is_some_and(|te| te.as_bytes().ends_with(b"chunked"));
    if chunked {
        backend.counters.chunked.fetch_add(1, Ordering::SeqCst);
    }
    // hyper has undone the chunking; buffer the body so http-backend gets a CONTENT_LENGTH.
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(err) => return (StatusCode::BAD_REQUEST, format!("unreadable body: {err}\n")).into_response(),
    };
    match http_backend(&backend, &parts, peer, &user, body).await {
        Ok(response) => response,
        Err(err) => {
            eprintln!("git http-backend for {} {}: {err:#}", parts.method, parts.uri);
            (StatusCode::INTERNAL_SERVER_ERROR, "git http-backend failed\n").into_response()
        }
    }
}

/// The username of a Basic `Authorization` whose password is `token`.
fn authorized_user(headers: &HeaderMap, token: &str) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    (password == token).then(|| user.to_string())
}

/// Runs `git http-backend` as a CGI for one request and translates its answer.
async fn http_backend(
    backend: &Backend,
    parts: &Parts,
    peer: SocketAddr,
    user: &str,
    body: Bytes,
) -> anyhow::Result<Response> {
    let mut cgi = git_command(&backend.home);
    cgi.arg("http-backend")
        .env("GIT_PROJECT_ROOT", &backend.project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REMOTE_USER", if user.is_empty() { "git" } else { user })
        .env("REMOTE_ADDR", peer.ip().to_string())
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_LENGTH", body.len().to_string());
    for (name, variable) in [
        (header::CONTENT_TYPE, "CONTENT_TYPE"),
        (header::CONTENT_ENCODING, "HTTP_CONTENT_ENCODING"),
        (HeaderName::from_static("git-protocol"), "GIT_PROTOCOL"),
    ] {
        if let Some(value) = parts.headers.get(name) {
            cgi.env(variable, value.to_str().with_context(|| format!("a non-ASCII {variable}"))?);
        }
    }
    let mut child = tokio::process::Command::from(cgi)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("spawn git http-backend")?;
    let (mut stdin, mut stdout, mut stderr) = (
        child.stdin.take().context("http-backend's stdin")?,
        child.stdout.take().context("http-backend's stdout")?,
        child.stderr.take().context("http-backend's stderr")?,
    );
    // All three at once: http-backend may answer before it has read everything, and a pipe
    // holds only 64 KiB.
    let write = async move {
        let written = stdin.write_all(&body).await;
        drop(stdin);
        written
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (written, read_out, read_err) =
        tokio::join!(write, stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
    read_out.context("read http-backend's stdout")?;
    read_err.context("read http-backend's stderr")?;
    let status = child.wait().await.context("wait for http-backend")?;
    let err = String::from_utf8_lossy(&err);
    if !err.trim().is_empty() {
        eprintln!("git http-backend for {} {}: {}", parts.method, parts.uri, err.trim_end());
    }
    if out.is_empty() {
        bail!("no output ({status}; stdin: {written:?}): {err}");
    }
    cgi_response(out)
}

/// An HTTP response from CGI output: headers, a blank line, the body; `Status:` sets the status.
fn cgi_response(mut output: Vec<u8>) -> anyhow::Result<Response> {
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    let mut start = 0;
    loop {
        let end =
            start + output[start..].iter().position(|&b| b == b'\n').context("no end to the CGI headers")?;
        let line = std::str::from_utf8(&output[start..end]).context("a non-UTF-8 CGI header")?;
        let line = line.strip_suffix('\r').unwrap_or(line);
        start = end + 1;
        if line.is_empty() {
            break;
        }
        let (name, value) =
            line.split_once(':').with_context(|| format!("a CGI header without colon: {line}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or_default();
            status = code.parse().with_context(|| format!("a CGI status: {value}"))?;
        } else {
            headers.append(HeaderName::from_bytes(name.as_bytes())?, HeaderValue::from_str(value)?);
        }
    }
    let mut response = Response::new(Body::from(output.split_off(start)));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}
