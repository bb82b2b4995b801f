//! What the last round left behind, in `DIR/.engram-sync.json`: the server and user it synced
//! with, each path's last-synced md5 and the index cursor. Written atomically.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::local::{self, STATE_FILE};
use super::remote::Cursor;

const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// The server's base URL.
    pub server: String,
    /// The user the token acted for, when the server says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The index cursor the last listing ended at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
    /// Last-synced md5 by path: both sides held this content when it was recorded.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

impl State {
    /// A state that has synced nothing with `server` yet.
    pub fn new(server: String, user: Option<String>) -> Self {
        State { version: VERSION, server, user, cursor: None, files: BTreeMap::new() }
    }

    /// The state in `root`, or `None` when there is none yet.
    pub fn load(root: &Path) -> anyhow::Result<Option<State>> {
        let Some(bytes) = local::read(root, STATE_FILE).context("cannot read the sync state")? else {
            return Ok(None);
        };
        let state: State = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a valid sync state; delete it to start over \
                 (no file is lost: differing files become conflict copies)",
                root.join(STATE_FILE).display()
            )
        })?;
        if state.version != VERSION {
            anyhow::bail!("{} has version {}; this engram reads {VERSION}", STATE_FILE, state.version);
        }
        Ok(Some(state))
    }

    pub fn save(&self, root: &Path) -> anyhow::Result<()> {
        let mut json = serde_json::to_vec_pretty(self).expect("a state serialises");
        json.push(b'\n');
        local::write_atomic(root, STATE_FILE, &json)
            .with_context(|| format!("cannot write {}", root.join(STATE_FILE).display()))
    }

    /// Remembers that both sides hold `md5` at `path` (`None`: neither holds it).
    pub fn record(&mut self, path: &str, md5: Option<String>) {
        match md5 {
            Some(md5) => self.files.insert(path.to_string(), md5),
            None => self.files.remove(path),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_bad_files_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), None);
        let mut state = State::new("http://h".into(), Some("u1".into()));
        state.record("a/b", Some("abc".into()));
        state.record("gone", Some("def".into()));
        state.record("gone", None);
        state.cursor = Some(Cursor::Number(7));
        state.save(dir.path()).unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), Some(state));

        std::fs::write(dir.path().join(STATE_FILE), "not json").unwrap();
        let error = format!("{:#}", State::load(dir.path()).unwrap_err());
        assert!(error.contains("delete it to start over"), "{error}");
    }
}
