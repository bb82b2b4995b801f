//! Child processes Engram starts (a job's program, an agent CLI under evaluation). A child
//! never inherits the server's environment: it gets the few variables programs need to run
//! (`PATH`, locale, time zone) plus what its caller sets explicitly, so `API_KEY`,
//! `JWT_SECRET`, `DATABASE_URL`, `AWS_*` and `*_API_KEY` never reach it. It gets its own `HOME`
//! and `TMPDIR` and a working directory, an argument vector (never a shell string), and a
//! process group of its own that is killed whole when its [`ProcessGroup`] is dropped. Its
//! output is read as lines, within `MAX_LINE_BYTES` a line and `MAX_LINES` lines a stream.

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

    /// The command to spawn in `scratch` (also its `HOME` and `TMPDIR`), its environment
    /// built from the allow-list; stdin is closed, stdout and stderr are piped.
    pub fn build(&self, scratch: &Path) -> tokio::process::Command {
        self.build_at(scratch, scratch)
    }

    /// The command to spawn in `cwd` with `home` as its `HOME` and `TMPDIR`.
    pub fn build_at(&self, home: &Path, cwd: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command.args(&self.args).env_clear();
        for key in INHERITED {
            if let Some(value) = std::env::var_os(key) {
                command.env(key, value);
            }
        }
        command
            .env("HOME", home)
            .env("TMPDIR", home)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        command
    }
}

/// The process group of a running child: killed with everything in it when dropped, so
/// neither the child nor anything it started outlives its caller.
pub struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    /// The group a child started with `process_group(0)` leads (its id is the child's pid).
    pub fn of(child: &tokio::process::Child) -> Self {
        Self(child.id())
    }

    /// The group's id (its leader's pid), while it has one.
    pub fn id(&self) -> Option<u32> {
        self.0
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let Some(id) = self.0.and_then(|id| i32::try_from(id).ok()) else { return };
        // ESRCH (the group is gone already) is the common, harmless outcome.
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(id), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Lines read from a stream, each cut at `MAX_LINE_BYTES` (the rest of a long line is read
/// and dropped), so no line a child writes can grow without bound.
pub struct BoundedLines<R> {
    stream: R,
    buffer: Box<[u8; 8192]>,
    start: usize,
    end: usize,
}

impl<R: AsyncRead + Unpin> BoundedLines<R> {
    pub fn new(stream: R) -> Self {
        Self { stream, buffer: Box::new([0; 8192]), start: 0, end: 0 }
    }

    /// The next line without its newline, and whether it was cut; `None` at the end.
    pub async fn next_line(&mut self) -> Option<(String, bool)> {
        let (mut current, mut cut, mut any) = (Vec::new(), false, false);
        loop {
            if self.start == self.end {
                self.start = 0;
                self.end = match self.stream.read(&mut self.buffer[..]).await {
                    Ok(0) | Err(_) => 0,
                    Ok(read) => read,
                };
                if self.end == 0 {
                    return any.then(|| (String::from_utf8_lossy(&current).into_owned(), cut));
                }
            }
            any = true;
            let chunk = &self.buffer[self.start..self.end];
            let (line, ended) = match chunk.iter().position(|&b| b == b'\n') {
                Some(at) => (&chunk[..at], at + 1),
                None => (chunk, chunk.len()),
            };
            let room = MAX_LINE_BYTES - current.len();
            cut |= line.len() > room;
            current.extend_from_slice(&line[..line.len().min(room)]);
            let newline = ended > line.len();
            self.start += ended;
            if newline {
                return Some((String::from_utf8_lossy(&current).into_owned(), cut));
            }
        }
    }
}

/// Reads `stream` to its end, handing each line (cut at `MAX_LINE_BYTES`, at most
/// `MAX_LINES` of them, then one saying the rest was dropped) to `line`.
pub async fn read_lines(stream: Option<impl AsyncRead + Unpin>, mut line: impl FnMut(String)) {
    let Some(stream) = stream else { return };
    let mut lines = BoundedLines::new(stream);
    let mut count = 0usize;
    while let Some((mut text, cut)) = lines.next_line().await {
        count += 1;
        if count <= MAX_LINES {
            if cut {
                text.push_str(" …(line cut)");
            }
            line(text);
        } else if count == MAX_LINES + 1 {
            line(format!("…(output past {MAX_LINES} lines dropped)"));
        }
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
