//! The local side: walking the synced directory into `/`-separated relative paths with their
//! md5, atomic writes (temp file + rename), deletes, conflict copies, and which remote paths
//! may be written here at all.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

/// The state file at the top of the synced directory; never synced.
pub const STATE_FILE: &str = ".engram-sync.json";
/// Names of the temporary files writes go through; never synced, removed when found.
pub const TEMP_PREFIX: &str = ".engram-sync-tmp-";

/// What a walk of the directory found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Each regular file's md5, by relative path.
    pub files: BTreeMap<String, String>,
    /// Paths (files or whole subtrees) that must be left alone this round: symlinks and
    /// anything unreadable, which would otherwise look deleted.
    pub blocked: Vec<String>,
    /// One line per entry skipped, for the user.
    pub warnings: Vec<String>,
}

impl Scan {
    /// Whether `path` is, or lies under, a blocked path.
    pub fn is_blocked(&self, path: &str) -> bool {
        self.blocked
            .iter()
            .any(|b| path == b || path.strip_prefix(b.as_str()).is_some_and(|r| r.starts_with('/')))
    }
}

/// Walks `root` (blocking): regular files only, symlinks skipped, the state file and
/// temporary files left out (stale temporary files are removed).
pub fn scan(root: &Path) -> std::io::Result<Scan> {
    let mut scan = Scan::default();
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if prefix.is_empty() => return Err(e),
            Err(e) => {
                scan.warnings.push(format!("{prefix}: cannot read the directory, leaving it alone: {e}"));
                scan.blocked.push(prefix);
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    scan.warnings.push(format!("{}: cannot list, leaving it alone: {e}", display(&prefix)));
                    scan.blocked.push(prefix.clone());
                    continue;
                }
            };
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                let name = entry.file_name().to_string_lossy().into_owned();
                scan.warnings.push(format!("{}: skipped, the name is not UTF-8", join(&prefix, &name)));
                continue;
            };
            let rel = join(&prefix, &name);
            if name.starts_with(TEMP_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            if prefix.is_empty() && name == STATE_FILE {
                continue;
            }
            let file_type = match entry.file_type() {
                Ok(file_type) => file_type,
                Err(e) => {
                    scan.warnings.push(format!("{rel}: cannot stat, leaving it alone: {e}"));
                    scan.blocked.push(rel);
                    continue;
                }
            };
            if file_type.is_dir() {
                pending.push((entry.path(), rel));
            } else if file_type.is_file() {
                match std::fs::read(entry.path()) {
                    Ok(body) => {
                        scan.files.insert(rel, crate::md5_hex(&body));
                    }
                    Err(e) => {
                        scan.warnings.push(format!("{rel}: cannot read, leaving it alone: {e}"));
                        scan.blocked.push(rel);
                    }
                }
            } else {
                let what = if file_type.is_symlink() { "a symlink" } else { "not a regular file" };
                scan.warnings.push(format!("{rel}: skipped, {what}"));
                scan.blocked.push(rel);
            }
        }
    }
    Ok(scan)
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") }
}

fn display(prefix: &str) -> &str {
    if prefix.is_empty() { "." } else { prefix }
}

/// Why a path from the server cannot be written under the synced directory, if it cannot.
pub fn unsafe_reason(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("the path is empty");
    }
    if path.contains('\0') {
        return Some("the path holds a NUL character");
    }
    if cfg!(windows) && path.contains(['\\', ':']) {
        return Some("the path holds a character Windows reserves");
    }
    let segments: Vec<&str> = path.split('/').collect();
    if segments.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return Some("the path has an empty, `.` or `..` segment");
    }
    if path == STATE_FILE {
        return Some("the name is this client's state file");
    }
    if segments.last().is_some_and(|s| s.starts_with(TEMP_PREFIX)) {
        return Some("the name is one of this client's temporary files");
    }
    None
}

fn full(root: &Path, rel: &str) -> PathBuf {
    rel.split('/').fold(root.to_path_buf(), |path, segment| path.join(segment))
}

/// The content of `rel`, or `None` when it is not there.
pub fn read(root: &Path, rel: &str) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(full(root, rel)) {
        Ok(body) => Ok(Some(body)),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The md5 of `rel` now, or `None` when it is not there.
pub fn md5_of(root: &Path, rel: &str) -> std::io::Result<Option<String>> {
    Ok(read(root, rel)?.map(|body| crate::md5_hex(&body)))
}

/// Replaces `rel` with `body` atomically: a temporary file beside it, flushed, then renamed
/// over it. Parent directories are created.
pub fn write_atomic(root: &Path, rel: &str, body: &[u8]) -> std::io::Result<()> {
    let target = full(root, rel);
    let parent = target.parent().expect("a path under the root has a parent");
    std::fs::create_dir_all(parent)?;
    let temp = parent.join(format!("{TEMP_PREFIX}{}", ulid::Ulid::generate()));
    let written = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(body)?;
        file.sync_all()?;
        std::fs::rename(&temp, &target)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// Removes `rel` (already gone is fine), then any parent directories that are left empty.
pub fn remove(root: &Path, rel: &str) -> std::io::Result<()> {
    let target = full(root, rel);
    match std::fs::remove_file(&target) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut dir = target.parent();
    while let Some(d) = dir {
        if d == root || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

/// Moves the local content of `rel` (whose md5 is `md5`) aside to `rel.conflict-<md5>`, or
/// `rel.conflict-<md5>-<n>` when that name holds something else; returns the new path. When
/// the first name already holds this very content, `rel` is left as it is.
pub fn move_to_conflict_copy(root: &Path, rel: &str, md5: &str) -> std::io::Result<String> {
    let base = format!("{rel}.conflict-{md5}");
    for n in 0..1000 {
        let candidate = if n == 0 { base.clone() } else { format!("{base}-{n}") };
        let target = full(root, &candidate);
        match std::fs::symlink_metadata(&target) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                std::fs::rename(full(root, rel), &target)?;
                return Ok(candidate);
            }
            Err(e) => return Err(e),
            Ok(meta) if meta.is_file() && md5_of(root, &candidate)?.as_deref() == Some(md5) => {
                return Ok(candidate);
            }
            Ok(_) => continue,
        }
    }
    Err(std::io::Error::other(format!("no free name for a conflict copy of {rel}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_regular_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_atomic(root, "a/b/c.txt", b"hello").unwrap();
        write_atomic(root, "Grüße.md", b"").unwrap();
        std::fs::write(root.join(STATE_FILE), "{}").unwrap();
        std::fs::write(root.join("a").join(format!("{TEMP_PREFIX}x")), "junk").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("a"), root.join("link")).unwrap();
        let scan = scan(root).unwrap();
        let paths: Vec<&str> = scan.files.keys().map(String::as_str).collect();
        assert_eq!(paths, ["Grüße.md", "a/b/c.txt"]);
        assert_eq!(scan.files["a/b/c.txt"], "5d41402abc4b2a76b9719d911017c592");
        assert!(!root.join("a").join(format!("{TEMP_PREFIX}x")).exists(), "stale temp files go");
        #[cfg(unix)]
        assert!(scan.is_blocked("link") && scan.is_blocked("link/b/c.txt") && !scan.is_blocked("linked"));
    }

    #[test]
    fn remote_paths_that_would_escape_or_collide_are_refused() {
        for ok in ["a", "a/b.txt", "ü/ß", ".hidden", "a/.engram-sync.json", "x..y"] {
            assert_eq!(unsafe_reason(ok), None, "{ok}");
        }
        for bad in
            ["", "/a", "a/", "a//b", "../a", "a/./b", "a/..", "a\0b", STATE_FILE, "d/.engram-sync-tmp-1"]
        {
            assert!(unsafe_reason(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn removing_prunes_empty_directories_and_conflict_copies_keep_both() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_atomic(root, "x/y/z.txt", b"1").unwrap();
        remove(root, "x/y/z.txt").unwrap();
        assert!(!root.join("x").exists() && root.exists());
        remove(root, "never/was").unwrap();

        write_atomic(root, "n.txt", b"mine").unwrap();
        let md5 = md5_of(root, "n.txt").unwrap().unwrap();
        write_atomic(root, &format!("n.txt.conflict-{md5}"), b"something else").unwrap();
        let copy = move_to_conflict_copy(root, "n.txt", &md5).unwrap();
        assert_eq!(copy, format!("n.txt.conflict-{md5}-1"));
        assert_eq!(read(root, &copy).unwrap().unwrap(), b"mine");
        assert_eq!(read(root, "n.txt").unwrap(), None);
    }
}
