//! Memory repos on disk (git2): staging and committing, a file's history, and paths that
//! would leave the work tree — `..`, absolute paths, `.git`, and symbolic links a cloned
//! repo may carry — refused for reading and writing.

use storage::git_memory::repo::{MemoryRepo, RepoError, checked_path};

fn files() -> Vec<(String, String)> {
    vec![("alex.md".into(), "# alex\n".into()), ("index.md".into(), "# Index\n".into())]
}

#[test]
fn staged_edits_become_one_commit_with_history() {
    let dir = tempfile::tempdir().unwrap();
    let repo = MemoryRepo::create(&dir.path().join("alex"), "main", &files()).unwrap();
    assert_eq!(repo.head().unwrap().1, "Initialize memory repository");
    assert!(repo.staged_changes().unwrap().is_empty());
    repo.write_file("memories/people/mom.md", "# Mom\nline one\n").unwrap();
    repo.write_file("index.md", "# Index\n- mom\n").unwrap();
    let staged: Vec<(String, &str)> =
        repo.staged_changes().unwrap().into_iter().map(|c| (c.path, c.change)).collect();
    assert_eq!(
        staged,
        [("index.md".to_string(), "modified"), ("memories/people/mom.md".to_string(), "added")]
    );
    let commit = repo.commit_staged("Session s1").unwrap().unwrap();
    assert_eq!(repo.commit_staged("Session s2").unwrap(), None, "nothing staged, no commit");
    repo.write_file("memories/people/mom.md", "# Mom\nline one\nline two\n").unwrap();
    repo.commit_staged("Session s2").unwrap().unwrap();
    let history = repo.history("memories/people/mom.md", 10).unwrap();
    let seen: Vec<(&str, usize, usize)> =
        history.iter().map(|r| (r.message.as_str(), r.lines_added, r.lines_removed)).collect();
    assert_eq!(seen, [("Session s2", 1, 0), ("Session s1", 2, 0)]);
    assert_eq!(history[1].commit, commit);
    assert_eq!(repo.history("alex.md", 10).unwrap().len(), 1);
}

#[test]
fn paths_outside_the_work_tree_are_refused() {
    for bad in ["../x.md", "/etc/passwd", ".git/config", "a//b.md", "a/../../b", "", "a\nb", "dir/"] {
        assert!(checked_path(bad).is_err(), "{bad:?}");
    }
    assert!(checked_path("memories/people/mom.md").is_ok());

    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret.md"), "secret").unwrap();
    let repo = MemoryRepo::create(&dir.path().join("alex"), "main", &files()).unwrap();
    let root = dir.path().join("alex");
    std::os::unix::fs::symlink(&outside, root.join("linked")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.md"), root.join("secret.md")).unwrap();

    assert!(matches!(repo.read_file("linked/secret.md"), Err(RepoError::InvalidPath(_))));
    assert!(matches!(repo.read_file("secret.md"), Err(RepoError::InvalidPath(_))));
    assert!(matches!(repo.write_file("linked/new.md", "x"), Err(RepoError::InvalidPath(_))));
    assert!(matches!(repo.write_file("secret.md", "overwritten"), Err(RepoError::InvalidPath(_))));
    assert!(!outside.join("new.md").exists());
    assert_eq!(std::fs::read_to_string(outside.join("secret.md")).unwrap(), "secret");
    let listed: Vec<String> = repo.markdown_files().unwrap().into_iter().map(|(p, _)| p).collect();
    assert_eq!(listed, ["alex.md", "index.md"], "links are not followed when listing");
}
