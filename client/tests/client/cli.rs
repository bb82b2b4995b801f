//! The `engram` binary on its own, without a server: how it refuses bad arguments and an
//! unreachable server. Syncing against a real server is tested by the api crate
//! (`api/tests/api/sync_cli.rs`), which runs this same binary.

use std::net::TcpListener;
use std::process::{Command, Output};

fn engram(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engram"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("the engram binary runs")
}

/// A local port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn sync_without_a_server_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = engram(&["sync", dir.path().to_str().unwrap(), "--token", "t"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server"), "{out:?}");
}

#[test]
fn a_zero_interval_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_str().unwrap();
    let out = engram(&[
        "sync",
        dir,
        "--server",
        "http://127.0.0.1:1",
        "--token",
        "t",
        "--watch",
        "--interval",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--interval"), "{out:?}");
}

#[test]
fn an_unreachable_server_fails_the_round_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("note.md"), "kept").unwrap();
    let server = format!("http://127.0.0.1:{}", closed_port());
    let out = engram(&["sync", dir.path().to_str().unwrap(), "--server", &server, "--token", "ek_x"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the server"), "{out:?}");
    assert_eq!(std::fs::read_to_string(dir.path().join("note.md")).unwrap(), "kept");
}
