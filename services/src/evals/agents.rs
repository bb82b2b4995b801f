//! The agents an evaluation may run, declared in a TOML file (`EVAL_AGENTS_FILE`): each
//! `[agents.<name>]` table names its driver and how to start it, and the environment it gets
//! (nothing else of the server's reaches it).
//!
//! ```toml
//! [agents.my-agent]
//! driver = "command"
//! command = ["/usr/local/bin/my-agent", "--json"]
//! protocol = "line"            # or "per_turn", with {prompt} in command
//! compact_prompt = "/compact"  # per_turn only
//! env = { MY_AGENT_MODEL = "small" }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::drivers::command::{CommandAgent, Protocol};

/// How an agent is driven.
#[derive(Debug, Clone, PartialEq)]
pub enum Driver {
    Command(CommandAgent),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentDefinition {
    pub name: String,
    pub driver: Driver,
    pub env: Vec<(String, String)>,
}

/// The agents that may be run, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Agents(BTreeMap<String, AgentDefinition>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsFile {
    #[serde(default)]
    agents: BTreeMap<String, AgentEntry>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum DriverName {
    Command,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentEntry {
    driver: DriverName,
    command: Vec<String>,
    #[serde(default = "line")]
    protocol: Protocol,
    #[serde(default)]
    compact_prompt: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

fn line() -> Protocol {
    Protocol::Line
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Agents {
    /// The agents `path` declares; none without a file.
    pub fn load(path: Option<&Path>) -> Result<Self, String> {
        let Some(path) = path else { return Ok(Self::default()) };
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: AgentsFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut agents = BTreeMap::new();
        for (name, entry) in file.agents {
            if !is_name(&name) {
                return Err(format!("agents.{name}: a name is 1 to 64 of a-z, 0-9, - and _"));
            }
            if entry.command.first().is_none_or(|program| program.is_empty()) {
                return Err(format!("agents.{name}.command: must name a program"));
            }
            if entry.protocol == Protocol::PerTurn
                && !entry.command.iter().any(|arg| arg.contains("{prompt}"))
            {
                return Err(format!("agents.{name}.command: a per_turn command passes {{prompt}}"));
            }
            if let Some(key) = entry.env.keys().find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
            {
                return Err(format!("agents.{name}.env: {key:?} is not a variable name"));
            }
            let driver = match entry.driver {
                DriverName::Command => Driver::Command(CommandAgent {
                    command: entry.command,
                    protocol: entry.protocol,
                    compact_prompt: entry.compact_prompt,
                }),
            };
            let env = entry.env.into_iter().collect();
            agents.insert(name.clone(), AgentDefinition { name, driver, env });
        }
        Ok(Self(agents))
    }

    pub fn get(&self, name: &str) -> Option<&AgentDefinition> {
        self.0.get(name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_are_read_from_their_file_and_checked() {
        let agents = Agents::parse(
            r#"
            [agents.liner]
            driver = "command"
            command = ["/bin/agent", "--json"]
            env = { MODEL = "small" }

            [agents.oneshot]
            driver = "command"
            command = ["/bin/agent", "{prompt}"]
            protocol = "per_turn"
            compact_prompt = "/compact"
            "#,
        )
        .unwrap();
        assert_eq!(agents.names(), ["liner", "oneshot"]);
        let liner = agents.get("liner").unwrap();
        assert_eq!(liner.env, [("MODEL".to_string(), "small".to_string())]);
        let Driver::Command(command) = &liner.driver;
        assert_eq!(command.protocol, Protocol::Line);
        assert!(agents.get("nobody").is_none());

        let bad = |text: &str| Agents::parse(text).unwrap_err();
        assert!(bad("[agents.x]\ndriver = \"command\"\ncommand = []").contains("agents.x.command"));
        assert!(bad("[agents.X]\ndriver = \"command\"\ncommand = [\"a\"]").contains("agents.X"));
        assert!(
            bad("[agents.x]\ndriver = \"command\"\ncommand = [\"a\"]\nprotocol = \"per_turn\"")
                .contains("{prompt}")
        );
        assert!(bad("[agents.x]\ndriver = \"robot\"\ncommand = [\"a\"]").contains("robot"));
        assert!(bad("[agents.x]\ndriver = \"command\"\ncommand = [\"a\"]\ncolour = 1").contains("colour"));
        assert_eq!(Agents::load(None).unwrap(), Agents::default());
    }
}
