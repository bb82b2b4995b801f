//! Child processes of jobs. A child never inherits the server's environment: it gets the few
//! variables programs need to run (`PATH`, locale, time zone) plus what its kind sets
//! explicitly, so `API_KEY`, `JWT_SECRET`, `DATABASE_URL`, `AWS_*` and `*_API_KEY` never reach
//! it. It starts in a scratch directory of its own outside the data dir (also its `HOME` and
//! `TMPDIR`), removed afterwards, with an argument vector (never a shell string), in a
//! process group of its own that is killed whole when the attempt ends. What it prints
//! becomes the job's log (stdout as `info`, stderr as `warn`), within `MAX_LINE_BYTES` a
//! line and `MAX_LINES` lines a stream.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longer lines of a child's output are cut here.
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// Lines of one output stream kept in the job's log; the rest is read and dropped.
pub const MAX_LINES: usize = 10_000;

/// Variables a child takes from the server's environment, when set.
const INHERITED: &[&str] = &["PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ"];

/// A program to run as a job's child process.
#[derive(Debug, Clone)]
pub struct ChildCommand {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl ChildCommand {
    pub fn new(program: impl Into<OsString>) -> Self {
        Self { program: program.into(), args: Vec::new(), env: Vec::new() }
    }

    pub fn args(mut self, args: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// A variable the kind hands the child on purpose (an agent's model endpoint, say).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The command to spawn in `scratch`, its environment built from the allow-list.
    pub(crate) fn build(&self, scratch: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command.args(&self.args).env_clear();
        for key in INHERITED {
            if let Some(value) = std::env::var_os(key) {
                command.env(key, value);
            }
        }
        command
            .env("HOME", scratch)
            .env("TMPDIR", scratch)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(scratch)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        command
    }
}

/// The process group of a running child: killed with everything in it when dropped, so
/// neither the child nor anything it started outlives the attempt.
pub(crate) struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    /// The group a child started with `process_group(0)` leads (its id is the child's pid).
    pub(crate) fn of(child: &tokio::process::Child) -> Self {
        Self(child.id())
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let Some(id) = self.0.and_then(|id| i32::try_from(id).ok()) else { return };
        // ESRCH (the group is gone already) is the common, harmless outcome.
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(id), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Reads `stream` to its end, handing each line (cut at `MAX_LINE_BYTES`, at most
/// `MAX_LINES` of them, then one saying the rest was dropped) to `line`.
pub(crate) async fn read_lines(stream: Option<impl AsyncRead + Unpin>, mut line: impl FnMut(String)) {
    let Some(mut stream) = stream else { return };
    let mut buffer = [0u8; 8192];
    let (mut current, mut cut, mut lines) = (Vec::new(), false, 0usize);
    let mut emit = |current: &mut Vec<u8>, cut: bool, lines: &mut usize| {
        *lines += 1;
        if *lines <= MAX_LINES {
            let mut text = String::from_utf8_lossy(current).into_owned();
            if cut {
                text.push_str(" …(line cut)");
            }
            line(text);
        } else if *lines == MAX_LINES + 1 {
            line(format!("…(output past {MAX_LINES} lines dropped)"));
        }
        current.clear();
    };
    loop {
        let read = match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        for &byte in &buffer[..read] {
            if byte == b'\n' {
                emit(&mut current, cut, &mut lines);
                cut = false;
            } else if current.len() < MAX_LINE_BYTES {
                current.push(byte);
            } else {
                cut = true;
            }
        }
    }
    if !current.is_empty() {
        emit(&mut current, cut, &mut lines);
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_LINE_BYTES, MAX_LINES, read_lines};

    async fn lines_of(input: Vec<u8>) -> Vec<String> {
        let mut lines = Vec::new();
        read_lines(Some(input.as_slice()), |line| lines.push(line)).await;
        lines
    }

    #[tokio::test]
    async fn output_becomes_bounded_lines() {
        assert_eq!(lines_of(b"one\ntwo\n\nlast".to_vec()).await, ["one", "two", "", "last"]);
        let long = lines_of([vec![b'x'; MAX_LINE_BYTES + 10], b"\nok\n".to_vec()].concat()).await;
        assert_eq!(long.len(), 2);
        assert!(long[0].ends_with("…(line cut)") && long[0].len() < MAX_LINE_BYTES + 20);
        let many = lines_of(b"y\n".repeat(MAX_LINES + 5)).await;
        assert_eq!(many.len(), MAX_LINES + 1);
        assert!(many[MAX_LINES].contains("dropped"));
    }
}
