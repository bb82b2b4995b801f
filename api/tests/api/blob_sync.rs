//! Blob sync over HTTP on files + SQLite (embedded) and S3 + PostgreSQL (scale-out): the
//! memory proxy's curl examples, conditional writes and their races, tombstones, versions,
//! batches, the `since` cursor, limits, tenancy, change events, and repair of a write cut
//! short between the store and the index.

use std::time::Duration;

use axum::body::Bytes;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use storage::blob::{Condition, md5_hex};

use crate::common;
use crate::common::{Stack, TestApp, spawn_app};

macro_rules! on_blob_stacks {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test] async fn $case() { super::run(super::Stack::Embedded, &[], super::$case).await })*
        }
        mod scale_out {
            $(#[tokio::test] async fn $case() { super::run(super::Stack::ScaleOut, &[], super::$case).await })*
        }
    };
}

on_blob_stacks!(
    the_seeds_curl_examples_give_the_seeds_answers,
    conditional_writes_follow_content_md5,
    concurrent_updates_from_one_md5_have_exactly_one_winner,
    concurrent_creates_have_exactly_one_winner,
    a_tombstone_can_be_recreated_with_new,
    versions_are_kept_and_readable,
    batches_report_each_operation,
    the_since_cursor_and_paging_return_every_change_once,
    bad_paths_and_headers_are_refused_and_change_nothing,
    users_sync_separate_namespaces,
    changes_are_announced_over_sse,
    a_write_cut_short_is_repaired_on_read_and_by_the_sweep,
    old_tombstones_are_purged_and_old_cursors_expire,
);

async fn run<F: std::future::Future<Output = ()>>(
    stack: Stack,
    extra: &[(&str, &str)],
    case: impl FnOnce(TestApp) -> F,
) {
    let Some(app) = spawn_app(stack, extra).await else { return };
    case(app).await;
}

const HELLO: &[u8] = b"Hello, World!";

async fn put(app: &TestApp, path: &str, content_md5: &str, body: &'static [u8]) -> (u16, Value) {
    let response = app
        .admin
        .put(app.at(&format!("/blob/{path}")))
        .header("Content-MD5", content_md5)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.admin.get(app.at(&format!("/blob/{path}"))).send().await.unwrap()
}

async fn delete(app: &TestApp, path: &str, if_match: Option<&str>) -> u16 {
    let mut request = app.admin.delete(app.at(&format!("/blob/{path}")));
    if let Some(md5) = if_match {
        request = request.header("If-Match", md5);
    }
    request.send().await.unwrap().status().as_u16()
}

async fn sync_index(app: &TestApp, query: &str) -> Value {
    app.get_json(&format!("/sync{query}")).await
}

async fn the_seeds_curl_examples_give_the_seeds_answers(app: TestApp) {
    let health = app.client.get(app.at("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["storage"], "connected");

    let (status, created) = put(&app, "test/file.txt", "new", HELLO).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["md5"], md5_hex(HELLO));

    let response = get(&app, "test/file.txt").await;
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", md5_hex(HELLO)));
    assert!(response.headers().contains_key("last-modified"));
    assert!(response.headers().contains_key("content-type"));
    assert_eq!(response.bytes().await.unwrap(), Bytes::from_static(HELLO));

    let index = sync_index(&app, "").await;
    let entry = &index["files"]["test/file.txt"];
    assert_eq!(entry["md5"], md5_hex(HELLO));
    assert_eq!(entry["size"], HELLO.len());
    assert_eq!(entry["is_deleted"], false);
    let stamp = entry["last_modified"].as_str().unwrap();
    assert!(stamp.ends_with('Z') && stamp.len() == "2024-01-15T10:30:00.123Z".len(), "{stamp}");
    assert!(index["index_last_modified"].is_string(), "{index}");

    assert_eq!(delete(&app, "test/file.txt", None).await, 204);
    let gone = get(&app, "test/file.txt").await;
    assert_eq!(gone.status(), 404);
    assert!(gone.json::<Value>().await.unwrap()["detail"].is_string(), "FastAPI clients read `detail`");
    assert_eq!(sync_index(&app, "").await["files"]["test/file.txt"]["is_deleted"], true);
    assert_eq!(delete(&app, "test/file.txt", None).await, 404);
}

async fn conditional_writes_follow_content_md5(app: TestApp) {
    let v1 = md5_hex(b"one");
    assert_eq!(put(&app, "notes/a.md", "new", b"one").await.0, 201);
    assert_eq!(put(&app, "notes/a.md", "new", b"two").await.0, 412, "create on an existing file");
    assert_eq!(put(&app, "notes/a.md", &md5_hex(b"stale"), b"two").await.0, 412, "a stale md5");
    assert_eq!(put(&app, "missing.md", &v1, b"two").await.0, 412, "update of a missing file");
    let (status, updated) = put(&app, "notes/a.md", &v1, b"two").await;
    assert_eq!((status, updated["md5"].as_str()), (200, Some(md5_hex(b"two").as_str())));
    // The standard base64 form of Content-MD5 names the same version.
    let base64_md5 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(storage::blob::md5_digest(b"two"))
    };
    assert_eq!(put(&app, "notes/a.md", &base64_md5, b"three").await.0, 200);

    let current = md5_hex(b"three");
    let cached = app
        .admin
        .get(app.at("/blob/notes/a.md"))
        .header("If-None-Match", format!("\"{current}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    assert_eq!(delete(&app, "notes/a.md", Some(&v1)).await, 412);
    assert_eq!(delete(&app, "notes/a.md", Some(&current)).await, 204);
    assert_eq!(delete(&app, "never.md", Some(&current)).await, 404);
}

/// Races one round of `n` writers and returns their statuses.
async fn race(app: &TestApp, path: &str, content_md5: &str, n: usize) -> Vec<u16> {
    let writers = (0..n).map(|i| {
        let request = app
            .admin
            .put(app.at(&format!("/blob/{path}")))
            .header("Content-MD5", content_md5.to_string())
            .body(format!("writer {i}"));
        async move { request.send().await.unwrap().status().as_u16() }
    });
    futures::future::join_all(writers).await
}

async fn assert_index_agrees_with_store(app: &TestApp, path: &str) -> String {
    let response = get(app, path).await;
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    let index = sync_index(app, "").await;
    assert_eq!(index["files"][path]["md5"], md5_hex(&body), "{index}");
    assert_eq!(index["files"][path]["size"], body.len());
    String::from_utf8(body.to_vec()).unwrap()
}

async fn concurrent_updates_from_one_md5_have_exactly_one_winner(app: TestApp) {
    for round in 0..3 {
        let path = format!("race/{round}.md");
        assert_eq!(put(&app, &path, "new", b"base").await.0, 201);
        let statuses = race(&app, &path, &md5_hex(b"base"), 32).await;
        let winners = statuses.iter().filter(|s| **s == 200).count();
        let refused = statuses.iter().filter(|s| **s == 412).count();
        assert_eq!((winners, refused), (1, 31), "round {round}: {statuses:?}");
        let content = assert_index_agrees_with_store(&app, &path).await;
        assert!(content.starts_with("writer "), "{content}");
    }
}

async fn concurrent_creates_have_exactly_one_winner(app: TestApp) {
    let statuses = race(&app, "fresh.md", "new", 32).await;
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 412).count(), 31, "{statuses:?}");
    assert_index_agrees_with_store(&app, "fresh.md").await;
}

async fn a_tombstone_can_be_recreated_with_new(app: TestApp) {
    for round in 0..2 {
        let body: &'static [u8] = if round == 0 { b"first life" } else { b"second life" };
        assert_eq!(put(&app, "phoenix.md", "new", body).await.0, 201, "round {round}");
        assert_eq!(put(&app, "phoenix.md", "new", body).await.0, 412);
        assert_eq!(delete(&app, "phoenix.md", None).await, 204);
        assert_eq!(
            put(&app, "phoenix.md", &md5_hex(body), body).await.0,
            412,
            "a tombstone has no md5 to update"
        );
    }
    assert_eq!(put(&app, "phoenix.md", "new", b"third life").await.0, 201);
    let index = sync_index(&app, "").await;
    assert_eq!(index["files"]["phoenix.md"]["is_deleted"], false);
    assert_eq!(index["files"]["phoenix.md"]["md5"], md5_hex(b"third life"));
}

async fn versions_are_kept_and_readable(app: TestApp) {
    let bodies: [&'static [u8]; 3] = [b"v1", b"v2", b"v3"];
    assert_eq!(put(&app, "doc.md", "new", bodies[0]).await.0, 201);
    assert_eq!(put(&app, "doc.md", &md5_hex(bodies[0]), bodies[1]).await.0, 200);
    assert_eq!(put(&app, "doc.md", &md5_hex(bodies[1]), bodies[2]).await.0, 200);
    let listed = app.get_json("/blob/doc.md/versions").await;
    let versions: Vec<i64> =
        listed["versions"].as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
    assert_eq!(versions, vec![3, 2, 1], "{listed}");
    for (number, body) in [(1, bodies[0]), (2, bodies[1]), (3, bodies[2])] {
        let response = get(&app, &format!("doc.md?version={number}")).await;
        assert_eq!(response.status(), 200, "version {number}");
        assert_eq!(response.bytes().await.unwrap(), Bytes::from_static(body));
    }
    assert_eq!(delete(&app, "doc.md", None).await, 204);
    let listed = app.get_json("/blob/doc.md/versions").await;
    assert_eq!(listed["versions"][0]["is_deleted"], true, "{listed}");
    let response = get(&app, "doc.md?version=3").await;
    assert_eq!(
        response.bytes().await.unwrap(),
        Bytes::from_static(bodies[2]),
        "a deleted file's versions stay"
    );
    assert_eq!(get(&app, "doc.md?version=99").await.status(), 404);
    // A live file called `versions` is served as a file.
    assert_eq!(put(&app, "doc.md/versions", "new", b"a file").await.0, 201);
    assert_eq!(get(&app, "doc.md/versions").await.bytes().await.unwrap(), Bytes::from_static(b"a file"));
}

async fn batches_report_each_operation(app: TestApp) {
    assert_eq!(put(&app, "b/existing.md", "new", b"old").await.0, 201);
    let body = json!({"operations": [
        {"op": "put", "path": "b/one.md", "content_md5": "new", "content": "one"},
        {"op": "put", "path": "b/bin", "content_md5": "new", "content_base64": "AAEC"},
        {"op": "put", "path": "b/existing.md", "content_md5": "new", "content": "clobber?"},
        {"op": "delete", "path": "b/existing.md", "if_match": md5_hex(b"old")},
        {"op": "put", "path": "../escape", "content_md5": "new", "content": "x"},
        {"op": "delete", "path": "b/never.md"},
    ]});
    let (status, reply) = app.post_json("/blobs/batch", &body).await;
    assert_eq!(status, 200, "{reply}");
    let statuses: Vec<u64> =
        reply["results"].as_array().unwrap().iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![201, 201, 412, 204, 400, 404], "{reply}");
    assert_eq!((reply["succeeded"].as_u64(), reply["failed"].as_u64()), (Some(3), Some(3)));
    assert_eq!(get(&app, "b/bin").await.bytes().await.unwrap(), Bytes::from_static(&[0, 1, 2]));
    let too_many = json!({"operations": vec![json!({"op": "delete", "path": "x"}); 101]});
    assert_eq!(app.post_json("/blobs/batch", &too_many).await.0, 422);
}

async fn the_since_cursor_and_paging_return_every_change_once(app: TestApp) {
    for i in 0..5 {
        assert_eq!(put(&app, &format!("page/{i}.md"), "new", b"x").await.0, 201);
    }
    let mut seen = Vec::new();
    let mut since = 0;
    loop {
        let page = sync_index(&app, &format!("?since={since}&limit=2")).await;
        seen.extend(page["files"].as_object().unwrap().keys().cloned());
        since = page["cursor"].as_i64().unwrap();
        if page["has_more"] == false {
            break;
        }
    }
    seen.sort();
    assert_eq!(seen, (0..5).map(|i| format!("page/{i}.md")).collect::<Vec<_>>());
    assert!(sync_index(&app, &format!("?since={since}")).await["files"].as_object().unwrap().is_empty());
    assert_eq!(put(&app, "page/3.md", &md5_hex(b"x"), b"y").await.0, 200);
    assert_eq!(delete(&app, "page/4.md", None).await, 204);
    let changes = sync_index(&app, &format!("?since={since}")).await;
    let files = changes["files"].as_object().unwrap();
    assert_eq!(files.keys().collect::<Vec<_>>(), vec!["page/3.md", "page/4.md"], "{changes}");
    assert_eq!(files["page/4.md"]["is_deleted"], true);
    for bad in ["?limit=0", "?limit=10001", "?since=-1", "?since=abc"] {
        assert_eq!(app.get(&format!("/sync{bad}")).await.status(), 422, "{bad}");
    }
}

async fn bad_paths_and_headers_are_refused_and_change_nothing(app: TestApp) {
    let long = "x/".repeat(520) + "end";
    for bad in ["a/%07bell", "a//b", long.as_str()] {
        let (status, reply) = put(&app, bad, "new", b"evil").await;
        assert_eq!(status, 400, "{bad}: {reply}");
        assert!(reply["detail"].is_string(), "{reply}");
    }
    // HTTP clients resolve `..` before sending; a hostile one does not.
    for raw in ["a/../b", "a/%2E%2E/b", "%2e%2e/etc/passwd", "./a"] {
        let head = raw_put(&app, raw).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{raw}: {head}");
    }
    let missing_header = app.admin.put(app.at("/blob/plain.md")).body("x").send().await.unwrap();
    assert_eq!(missing_header.status(), 400);
    assert_eq!(put(&app, "plain.md", "not-an-md5", b"x").await.0, 400);
    let wrong_digest = app
        .admin
        .put(app.at("/blob/plain.md"))
        .header("Content-MD5", "new")
        .header("Content-Digest", "sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:")
        .body("not hello")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_digest.status(), 400);
    let right_digest = app
        .admin
        .put(app.at("/blob/digest.md"))
        .header("Content-MD5", "new")
        .header("Content-Digest", "sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(right_digest.status(), 201);
    let files = sync_index(&app, "").await["files"].as_object().unwrap().clone();
    assert_eq!(files.keys().collect::<Vec<_>>(), vec!["digest.md"], "nothing else was stored");
}

/// Sends `PUT /blob/{raw}` exactly as written and returns the response head.
async fn raw_put(app: &TestApp, raw: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "PUT /blob/{raw} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-MD5: new\r\nContent-Length: 4\r\nConnection: close\r\n\r\nevil",
        common::ADMIN_KEY
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

async fn users_sync_separate_namespaces(app: TestApp) {
    assert_eq!(put(&app, "shared-name.md", "new", b"admin's").await.0, 201);
    let (status, user) = app
        .post_json(
            "/api/v1/auth/register",
            &json!({"email": "blob-user@example.com", "password": "a long enough password"}),
        )
        .await;
    assert_eq!(status, 201, "{user}");
    let token = user["token"].as_str().unwrap();
    let (status, key) = {
        let response = app
            .client
            .post(app.at("/api/v1/api-keys"))
            .bearer_auth(token)
            .json(&json!({"name": "sync", "scopes": ["blobs:read"]}))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 201, "{key}");
    let read_only = key["secret"].as_str().unwrap();
    let as_user = |method: reqwest::Method, path: &str, bearer: &str| {
        app.client.request(method, app.at(path)).bearer_auth(bearer.to_string())
    };
    assert_eq!(
        as_user(reqwest::Method::GET, "/blob/shared-name.md", token).send().await.unwrap().status(),
        404
    );
    let index: Value =
        as_user(reqwest::Method::GET, "/sync", token).send().await.unwrap().json().await.unwrap();
    assert!(index["files"].as_object().unwrap().is_empty(), "{index}");
    let write = as_user(reqwest::Method::PUT, "/blob/shared-name.md", read_only)
        .header("Content-MD5", "new")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 403, "blobs:read does not write");
    let write = as_user(reqwest::Method::PUT, "/blob/shared-name.md", token)
        .header("Content-MD5", "new")
        .body("user's")
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 201, "the same path in another namespace is new");
    let read = as_user(reqwest::Method::GET, "/blob/shared-name.md", read_only).send().await.unwrap();
    assert_eq!(read.bytes().await.unwrap(), Bytes::from_static(b"user's"));
    assert_eq!(get(&app, "shared-name.md").await.bytes().await.unwrap(), Bytes::from_static(b"admin's"));
    assert_eq!(app.client.get(app.at("/sync")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}

async fn changes_are_announced_over_sse(app: TestApp) {
    let response = app.admin.get(app.at("/sync/events")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    while !text.contains("event: ready") {
        text.push_str(&String::from_utf8_lossy(&stream.next().await.unwrap().unwrap()));
    }
    assert_eq!(put(&app, "live/news.md", "new", b"fresh").await.0, 201);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !text.contains("live/news.md") {
        let chunk = tokio::time::timeout_at(deadline, stream.next()).await.expect("a change event in time");
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
    }
    assert!(text.contains("event: change"), "{text}");
    assert!(text.contains(&md5_hex(b"fresh")), "{text}");
}

/// The app's blob store and index, opened the way another process would.
async fn backends(app: &TestApp) -> storage::Backends {
    let raw = storage::config::RawConfig::layered(app.env.clone(), [], []);
    let config = storage::config::Config::from_raw(&raw).unwrap();
    storage::Backends::connect(&config).await.unwrap()
}

async fn a_write_cut_short_is_repaired_on_read_and_by_the_sweep(app: TestApp) {
    let backends = backends(&app).await;
    let index = backends.database.blob_index();
    for path in ["cut/read.md", "cut/swept.md"] {
        assert_eq!(put(&app, path, "new", b"before").await.0, 201);
        // A process records its write, replaces the object, and dies before the index.
        index.begin_write("admin", path).await.unwrap();
        let key = services::blob_sync::object_key("admin", path);
        let condition = Condition::Matches(md5_hex(b"before"));
        backends.blobs.put(&key, Bytes::from_static(b"after"), condition).await.unwrap();
        assert_eq!(sync_index(&app, "").await["files"][path]["md5"], md5_hex(b"before"), "the index lags");
    }
    // A read sees the disagreement and settles it.
    assert_eq!(assert_index_agrees_with_store(&app, "cut/read.md").await, "after");
    // The sweep settles what nobody read.
    let id = app.submit(json!({"kind": "blob_repair", "payload": {"older_than_secs": 0}})).await;
    let job = app.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["repaired"], 2, "{job}");
    assert_eq!(sync_index(&app, "").await["files"]["cut/swept.md"]["md5"], md5_hex(b"after"));
    // An index row with no object (a delete cut short) becomes a tombstone on read.
    let key = services::blob_sync::object_key("admin", "cut/read.md");
    assert!(backends.blobs.delete(&key, Condition::None).await.unwrap());
    assert_eq!(get(&app, "cut/read.md").await.status(), 404);
    assert_eq!(sync_index(&app, "").await["files"]["cut/read.md"]["is_deleted"], true);
}

async fn old_tombstones_are_purged_and_old_cursors_expire(app: TestApp) {
    assert_eq!(put(&app, "gc/old.md", "new", b"x").await.0, 201);
    let before_delete = sync_index(&app, "").await["cursor"].as_i64().unwrap();
    assert_eq!(delete(&app, "gc/old.md", None).await, 204);
    assert_eq!(put(&app, "gc/live.md", "new", b"y").await.0, 201);
    // Age the tombstone past the retention.
    let index = backends(&app).await.database.blob_index();
    let mut tombstone = index.get("admin", "gc/old.md").await.unwrap().unwrap();
    tombstone.last_modified = chrono::Utc::now() - chrono::Duration::days(40);
    index.upsert(&tombstone).await.unwrap();
    let id = app.submit(json!({"kind": "tombstone_gc", "payload": {"retention_days": 30}})).await;
    let job = app.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(job["result"]["purged"], 1, "{job}");
    let files = sync_index(&app, "").await["files"].as_object().unwrap().clone();
    assert_eq!(files.keys().collect::<Vec<_>>(), vec!["gc/live.md"]);
    let expired = app.get(&format!("/sync?since={before_delete}")).await;
    assert_eq!(expired.status(), 410, "a cursor from before a purged delete cannot be followed");
    assert!(expired.json::<Value>().await.unwrap()["detail"].is_string());
    assert_eq!(get(&app, "gc/old.md?version=1").await.status(), 404, "its versions went with it");
}

#[tokio::test]
async fn files_over_the_size_limit_are_refused_with_413() {
    let Some(app) = spawn_app(Stack::Embedded, &[("BLOB_MAX_MB", "1")]).await else { return };
    static BIG: [u8; 1024 * 1024 + 1] = [b'x'; 1024 * 1024 + 1];
    let (status, reply) = put(&app, "big.bin", "new", &BIG).await;
    assert_eq!(status, 413, "{reply}");
    assert_eq!(put(&app, "fits.bin", "new", &BIG[..1024 * 1024]).await.0, 201);
    assert_eq!(get(&app, "big.bin").await.status(), 404);
}

#[tokio::test]
async fn only_the_configured_number_of_versions_is_kept() {
    let Some(app) = spawn_app(Stack::Embedded, &[("BLOB_VERSIONS", "3")]).await else { return };
    let bodies: [&'static [u8]; 5] = [b"1", b"2", b"3", b"4", b"5"];
    assert_eq!(put(&app, "v.md", "new", bodies[0]).await.0, 201);
    for pair in bodies.windows(2) {
        assert_eq!(put(&app, "v.md", &md5_hex(pair[0]), pair[1]).await.0, 200);
    }
    let listed = app.get_json("/blob/v.md/versions").await;
    let versions: Vec<i64> =
        listed["versions"].as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
    assert_eq!(versions, vec![5, 4, 3]);
    assert_eq!(get(&app, "v.md?version=2").await.status(), 404);
    assert_eq!(get(&app, "v.md?version=3").await.bytes().await.unwrap(), Bytes::from_static(b"3"));
    // Versions 3 and 4 were copied aside when replaced; 1 and 2 were deleted with their rows.
    assert_eq!(files_under_versions(&app.data_dir.join("blobs")), 2);
}

fn files_under_versions(dir: &std::path::Path) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            count += files_under_versions(&path);
        } else if path.components().any(|c| c.as_os_str() == "versions") {
            count += 1;
        }
    }
    count
}

#[tokio::test]
async fn start_up_schedules_the_upkeep_jobs_once() {
    let Some(app) = spawn_app(Stack::Embedded, &[("SYSTEM_SCHEDULES", "true")]).await else { return };
    let mut env = app.env.clone();
    env.push(("ENGRAM_BIND".to_string(), "127.0.0.1:0".to_string()));
    let config = storage::config::Config::from_raw(&storage::config::RawConfig::layered(env, [], []));
    let again = api::Application::build(config.unwrap()).await.expect("a second process starts");
    drop(again);
    let schedules = app.get_json("/api/v1/schedules").await;
    let mut kinds: Vec<(String, String)> = schedules["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["kind"].as_str().unwrap().to_string(), s["cron"].as_str().unwrap().to_string()))
        .collect();
    kinds.sort();
    let expected = [
        ("blob_repair", "*/10 * * * *"),
        ("index_memory_vectors", "*/5 * * * *"),
        ("tombstone_gc", "17 3 * * *"),
    ];
    assert_eq!(kinds, expected.map(|(k, c)| (k.to_string(), c.to_string())), "{schedules}");
}
