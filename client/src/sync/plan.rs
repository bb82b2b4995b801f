//! The sync decision table: from a path's local md5 (L), remote live md5 (R) and last-synced
//! md5 (S), what to do with it. Pure, so every row is a unit test.

/// What to do with one path this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Both sides hold the same content (or neither holds any): remember it as synced.
    Record,
    /// The local side changed and the remote did not: `PUT` with `Content-MD5: <if_match>`,
    /// or `new` when the server holds no live file.
    Upload { if_match: Option<String> },
    /// The local file was deleted and the remote is unchanged: `DELETE` with `If-Match`.
    DeleteRemote { if_match: String },
    /// The remote changed (or the local file is gone while the remote changed): fetch it.
    Download,
    /// The remote was deleted and the local file is unchanged: delete it here too.
    DeleteLocal,
    /// Both sides changed differently: keep both (remote under the name, local as a copy).
    Conflict,
}

/// Decides what to do with a path given L (`local`), R (`remote`, `None` when the server
/// holds no live file: absent or tombstoned) and S (`synced`, `None` when never synced or
/// last synced as absent).
pub fn decide(local: Option<&str>, remote: Option<&str>, synced: Option<&str>) -> Action {
    if local == remote {
        return Action::Record;
    }
    let local_changed = local != synced;
    let remote_changed = remote != synced;
    match (local, remote) {
        // Unreachable with `local != remote`, kept total.
        (None, None) => Action::Record,
        (Some(_), _) if !remote_changed => Action::Upload { if_match: remote.map(str::to_string) },
        (None, Some(r)) if !remote_changed => Action::DeleteRemote { if_match: r.to_string() },
        (Some(_), None) if !local_changed => Action::DeleteLocal,
        (_, Some(_)) if !local_changed => Action::Download,
        // Both changed from here on.
        // Deleted here, changed there: take the remote content, nothing is lost.
        (None, Some(_)) => Action::Download,
        // Changed here, deleted there: the local edit survives as a new file.
        (Some(_), None) => Action::Upload { if_match: None },
        (Some(_), Some(_)) => Action::Conflict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Option<&str> = Some("aaaa");
    const B: Option<&str> = Some("bbbb");
    const C: Option<&str> = Some("cccc");
    const NONE: Option<&str> = None;

    fn upload(if_match: Option<&str>) -> Action {
        Action::Upload { if_match: if_match.map(str::to_string) }
    }

    #[test]
    fn equal_sides_are_recorded() {
        for synced in [NONE, A, B] {
            assert_eq!(decide(A, A, synced), Action::Record, "synced {synced:?}");
            assert_eq!(decide(NONE, NONE, synced), Action::Record, "synced {synced:?}");
        }
    }

    #[test]
    fn local_changes_upload_when_the_remote_is_unchanged() {
        assert_eq!(decide(B, A, A), upload(A), "an edit updates that version");
        assert_eq!(decide(A, NONE, NONE), upload(NONE), "a new file is created");
    }

    #[test]
    fn local_deletes_delete_the_remote_version_we_saw() {
        assert_eq!(decide(NONE, A, A), Action::DeleteRemote { if_match: "aaaa".into() });
    }

    #[test]
    fn remote_changes_download_when_the_local_side_is_unchanged() {
        assert_eq!(decide(A, B, A), Action::Download, "an edit on the server");
        assert_eq!(decide(NONE, A, NONE), Action::Download, "a new file on the server");
        assert_eq!(decide(A, NONE, A), Action::DeleteLocal, "a tombstone on the server");
    }

    #[test]
    fn both_sides_changed() {
        assert_eq!(decide(B, C, A), Action::Conflict, "two different edits");
        assert_eq!(decide(A, B, NONE), Action::Conflict, "created on both sides differently");
        assert_eq!(decide(NONE, B, A), Action::Download, "deleted here, edited there");
        assert_eq!(decide(B, NONE, A), upload(NONE), "edited here, deleted there");
    }

    #[test]
    fn every_combination_is_decided_without_losing_a_live_version() {
        let values = [NONE, A, B, C];
        for l in values {
            for r in values {
                for s in values {
                    let action = decide(l, r, s);
                    // A live local version is only dropped when it is exactly what was synced.
                    if action == Action::DeleteLocal {
                        assert!(l.is_some() && l == s && r.is_none(), "{l:?} {r:?} {s:?}");
                    }
                    // A live remote version is only replaced or deleted when we saw it synced.
                    if let Action::DeleteRemote { if_match } = &action {
                        assert!(l.is_none() && r == s && r == Some(if_match.as_str()), "{l:?} {r:?} {s:?}");
                    }
                    if let Action::Upload { if_match } = &action {
                        assert_eq!(if_match.as_deref(), r, "uploads name the version they replace");
                        assert!(r.is_none() || r == s, "{l:?} {r:?} {s:?}");
                    }
                }
            }
        }
    }
}
