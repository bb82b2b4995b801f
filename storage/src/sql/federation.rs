//! Federation (agmem coordinator) on SQLite and PostgreSQL: each tenant's agents push
//! summaries (topic counts, fact hashes, metadata) and pulls read the merge of every agent's
//! latest summary. A push diffs its agent's stored summary against the new one and applies
//! only the difference to the merged tables, in one transaction that first bumps the
//! tenant's `seq` (which also serialises a tenant's pushes). Merged rows carry the seq that
//! last changed them, so a pull `since` a cursor reads only what changed. Lists of any size
//! travel as one JSON parameter (`json_each` / `jsonb_array_elements`), so no statement runs
//! into a bind-variable limit.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{FromRow, PgPool, SqlitePool};

use super::millis::{from_millis, to_millis};
use crate::error::{StoreError, StoreResult};

/// One agent's summary, validated by the caller: hashes lowercase hex.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub agent_id: String,
    pub timestamp: DateTime<Utc>,
    pub topic_counts: BTreeMap<String, i64>,
    /// Duplicates count once.
    pub fact_hashes: Vec<String>,
    /// A JSON object, kept as pushed.
    pub metadata: Value,
}

/// What became of a push.
#[derive(Debug, Clone, PartialEq)]
pub enum PushOutcome {
    /// Stored as the agent's latest summary; `cursor` is the tenant's seq after it.
    Accepted { cursor: i64 },
    /// The agent already has a summary with a later timestamp (`stored`); nothing changed.
    Ignored { stored: DateTime<Utc> },
}

/// The merge of the latest summary of each of a tenant's agents, whole or since a cursor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergedView {
    /// Whole: every topic's total. Since a cursor: the topics whose total changed.
    pub topic_counts: BTreeMap<String, i64>,
    /// Whole: every hash, sorted. Since a cursor: the hashes that appeared.
    pub fact_hashes: Vec<String>,
    /// Since a cursor: topics no agent names any more (always empty for a whole view).
    pub removed_topics: Vec<String>,
    /// Since a cursor: hashes no agent holds any more (always empty for a whole view).
    pub removed_fact_hashes: Vec<String>,
    pub contributing_agents: i64,
    /// The latest summary timestamp of any agent.
    pub last_updated: Option<DateTime<Utc>>,
    pub total_topics: i64,
    pub total_facts: i64,
    /// The tenant's seq this view reflects: pass it as `since` to read what changes next.
    pub cursor: i64,
}

/// An agent and its latest summary, without the summary's lists.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentRecord {
    pub agent_id: String,
    pub timestamp: DateTime<Utc>,
    pub last_push: DateTime<Utc>,
    pub topics: i64,
    pub facts: i64,
    pub metadata: Value,
}

#[async_trait]
pub trait FederationStore: Send + Sync {
    /// Makes `summary` its agent's latest in `tenant`'s federation, unless the agent's stored
    /// summary has a later timestamp (an equal one is replaced).
    async fn push(
        &self,
        tenant: &str,
        summary: &Summary,
        received_at: DateTime<Utc>,
    ) -> StoreResult<PushOutcome>;

    /// The merged view, whole (`since: None`) or what changed after the cursor `since`.
    async fn pull(&self, tenant: &str, since: Option<i64>) -> StoreResult<MergedView>;

    /// Every agent of `tenant`, by id.
    async fn agents(&self, tenant: &str) -> StoreResult<Vec<AgentRecord>>;
}

/// A change to one merged topic: how much its total and its number of agents move, and the
/// agent's new count (`None`: the agent no longer names it).
#[derive(Debug, Clone, PartialEq, Serialize)]
struct TopicChange {
    topic: String,
    total: i64,
    agents: i64,
    count: Option<i64>,
}

/// The topic changes that turn an agent's `old` counts into `new`.
fn topic_changes(old: &HashMap<String, i64>, new: &BTreeMap<String, i64>) -> Vec<TopicChange> {
    let mut changes: Vec<TopicChange> = new
        .iter()
        .filter_map(|(topic, &count)| match old.get(topic) {
            Some(&before) if before == count => None,
            Some(&before) => Some(TopicChange {
                topic: topic.clone(),
                total: count - before,
                agents: 0,
                count: Some(count),
            }),
            None => Some(TopicChange { topic: topic.clone(), total: count, agents: 1, count: Some(count) }),
        })
        .collect();
    changes.extend(old.iter().filter(|(topic, _)| !new.contains_key(*topic)).map(|(topic, &before)| {
        TopicChange { topic: topic.clone(), total: -before, agents: -1, count: None }
    }));
    changes
}

/// The hashes to add and to remove to turn an agent's `old` facts into `new`, and how many
/// distinct hashes `new` holds.
fn fact_changes(old: HashSet<String>, new: &[String]) -> (Vec<&String>, Vec<String>, usize) {
    let new: HashSet<&String> = new.iter().collect();
    let added = new.iter().filter(|hash| !old.contains(hash.as_str())).copied().collect();
    let removed = old.into_iter().filter(|hash| !new.contains(hash)).collect();
    (added, removed, new.len())
}

/// The statements that differ between the two databases. Each list parameter is a JSON
/// array: of strings (`*_facts`, `delete_agent_topics`) or of `TopicChange`s.
struct DialectSql {
    /// Run first in a pull's transaction, so every read sees one snapshot (SQLite's read
    /// transactions already do).
    snapshot: Option<&'static str>,
    /// `$1` tenant, `$2` seq, `$3` changes; returns each topic's agents after the change.
    merge_topics: &'static str,
    /// `$1` tenant, `$2` agent, `$3` changes with a count.
    put_agent_topics: &'static str,
    /// `$1` tenant, `$2` agent, `$3` topics.
    delete_agent_topics: &'static str,
    /// `$1` tenant, `$2` agent, `$3` hashes.
    add_agent_facts: &'static str,
    delete_agent_facts: &'static str,
    /// `$1` tenant, `$2` seq, `$3` hashes: one more (or one fewer) agent holds each.
    add_facts: &'static str,
    remove_facts: &'static str,
}

/// `WHERE true` lets SQLite parse the `ON CONFLICT` after a `SELECT`.
const SQLITE_SQL: DialectSql = DialectSql {
    snapshot: None,
    merge_topics: "INSERT INTO federation_topics (tenant, topic, total, agents, changed_seq) \
         SELECT $1, value->>'topic', value->>'total', value->>'agents', $2 FROM json_each($3) WHERE true \
         ON CONFLICT (tenant, topic) DO UPDATE SET total = federation_topics.total + excluded.total, \
         agents = federation_topics.agents + excluded.agents, changed_seq = excluded.changed_seq \
         RETURNING topic, agents",
    put_agent_topics: "INSERT INTO federation_agent_topics (tenant, agent_id, topic, count) \
         SELECT $1, $2, value->>'topic', value->>'count' FROM json_each($3) WHERE value->>'count' IS NOT NULL \
         ON CONFLICT (tenant, agent_id, topic) DO UPDATE SET count = excluded.count",
    delete_agent_topics: "DELETE FROM federation_agent_topics WHERE tenant = $1 AND agent_id = $2 \
         AND topic IN (SELECT value FROM json_each($3))",
    add_agent_facts: "INSERT INTO federation_agent_facts (tenant, agent_id, hash) \
         SELECT $1, $2, value FROM json_each($3)",
    delete_agent_facts: "DELETE FROM federation_agent_facts WHERE tenant = $1 AND agent_id = $2 \
         AND hash IN (SELECT value FROM json_each($3))",
    add_facts: "INSERT INTO federation_facts (tenant, hash, refcount, changed_seq) \
         SELECT $1, value, 1, $2 FROM json_each($3) WHERE true \
         ON CONFLICT (tenant, hash) DO UPDATE SET refcount = federation_facts.refcount + 1, \
         changed_seq = CASE WHEN federation_facts.refcount = 0 THEN excluded.changed_seq \
         ELSE federation_facts.changed_seq END",
    remove_facts: "UPDATE federation_facts SET refcount = refcount - 1, \
         changed_seq = CASE WHEN refcount = 1 THEN $2 ELSE changed_seq END \
         WHERE tenant = $1 AND hash IN (SELECT value FROM json_each($3))",
};

/// `= ANY(ARRAY(…))` makes the list an index condition (see the job store).
const POSTGRES_SQL: DialectSql = DialectSql {
    snapshot: Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"),
    merge_topics: "INSERT INTO federation_topics (tenant, topic, total, agents, changed_seq) \
         SELECT $1, r->>'topic', (r->>'total')::BIGINT, (r->>'agents')::BIGINT, $2 \
         FROM jsonb_array_elements($3) AS r \
         ON CONFLICT (tenant, topic) DO UPDATE SET total = federation_topics.total + excluded.total, \
         agents = federation_topics.agents + excluded.agents, changed_seq = excluded.changed_seq \
         RETURNING topic, agents",
    put_agent_topics: "INSERT INTO federation_agent_topics (tenant, agent_id, topic, count) \
         SELECT $1, $2, r->>'topic', (r->>'count')::BIGINT FROM jsonb_array_elements($3) AS r \
         WHERE r->>'count' IS NOT NULL \
         ON CONFLICT (tenant, agent_id, topic) DO UPDATE SET count = excluded.count",
    delete_agent_topics: "DELETE FROM federation_agent_topics WHERE tenant = $1 AND agent_id = $2 \
         AND topic = ANY(ARRAY(SELECT jsonb_array_elements_text($3)))",
    add_agent_facts: "INSERT INTO federation_agent_facts (tenant, agent_id, hash) \
         SELECT $1, $2, jsonb_array_elements_text($3)",
    delete_agent_facts: "DELETE FROM federation_agent_facts WHERE tenant = $1 AND agent_id = $2 \
         AND hash = ANY(ARRAY(SELECT jsonb_array_elements_text($3)))",
    add_facts: "INSERT INTO federation_facts (tenant, hash, refcount, changed_seq) \
         SELECT $1, h, 1, $2 FROM jsonb_array_elements_text($3) AS h \
         ON CONFLICT (tenant, hash) DO UPDATE SET refcount = federation_facts.refcount + 1, \
         changed_seq = CASE WHEN federation_facts.refcount = 0 THEN excluded.changed_seq \
         ELSE federation_facts.changed_seq END",
    remove_facts: "UPDATE federation_facts SET refcount = refcount - 1, \
         changed_seq = CASE WHEN refcount = 1 THEN $2 ELSE changed_seq END \
         WHERE tenant = $1 AND hash = ANY(ARRAY(SELECT jsonb_array_elements_text($3)))",
};

/// Takes the tenant's next seq, row-locking the tenant until the push commits.
const BUMP_SEQ: &str = "INSERT INTO federation_tenants (tenant, seq, topics, facts) VALUES ($1, 1, 0, 0) \
     ON CONFLICT (tenant) DO UPDATE SET seq = federation_tenants.seq + 1 RETURNING seq";
const AGENT_TIMESTAMP: &str = "SELECT timestamp FROM federation_agents WHERE tenant = $1 AND agent_id = $2";
const AGENT_TOPICS: &str =
    "SELECT topic, count FROM federation_agent_topics WHERE tenant = $1 AND agent_id = $2";
const AGENT_FACTS: &str = "SELECT hash FROM federation_agent_facts WHERE tenant = $1 AND agent_id = $2";
/// The hashes whose presence this push changed: +1 for each that appeared, -1 for each gone.
const FACTS_APPEARED: &str = "SELECT COALESCE(SUM(CASE WHEN refcount > 0 THEN 1 ELSE -1 END), 0) \
     FROM federation_facts WHERE tenant = $1 AND changed_seq = $2";
const COUNT_LIVE: &str =
    "UPDATE federation_tenants SET topics = topics + $2, facts = facts + $3 WHERE tenant = $1";
const PUT_AGENT: &str = "INSERT INTO federation_agents (tenant, agent_id, timestamp, metadata, received_at, seq, \
     topics, facts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (tenant, agent_id) DO UPDATE SET \
     timestamp = excluded.timestamp, metadata = excluded.metadata, received_at = excluded.received_at, \
     seq = excluded.seq, topics = excluded.topics, facts = excluded.facts";

const TENANT: &str = "SELECT seq, topics, facts FROM federation_tenants WHERE tenant = $1";
const AGENT_STATS: &str = "SELECT COUNT(*), MAX(timestamp) FROM federation_agents WHERE tenant = $1";
const TOPICS: &str =
    "SELECT topic, total, agents FROM federation_topics WHERE tenant = $1 AND agents > 0 ORDER BY topic";
const TOPICS_SINCE: &str = "SELECT topic, total, agents FROM federation_topics \
     WHERE tenant = $1 AND changed_seq > $2 ORDER BY topic";
const FACTS: &str =
    "SELECT hash, refcount FROM federation_facts WHERE tenant = $1 AND refcount > 0 ORDER BY hash";
const FACTS_SINCE: &str = "SELECT hash, refcount FROM federation_facts \
     WHERE tenant = $1 AND changed_seq > $2 ORDER BY hash";
const AGENTS: &str = "SELECT agent_id, timestamp, received_at, topics, facts, metadata FROM federation_agents \
     WHERE tenant = $1 ORDER BY agent_id";

#[derive(FromRow)]
struct AgentRow {
    agent_id: String,
    timestamp: i64,
    received_at: i64,
    topics: i64,
    facts: i64,
    metadata: String,
}

impl TryFrom<AgentRow> for AgentRecord {
    type Error = StoreError;

    fn try_from(row: AgentRow) -> StoreResult<Self> {
        Ok(AgentRecord {
            metadata: serde_json::from_str(&row.metadata).map_err(|e| StoreError::backend("database", e))?,
            agent_id: row.agent_id,
            timestamp: from_millis(row.timestamp),
            last_push: from_millis(row.received_at),
            topics: row.topics,
            facts: row.facts,
        })
    }
}

/// How many topics a push brought into the merge (negative: took out), from each changed
/// topic's agents after the change and the change itself.
fn topics_appeared(changes: &[TopicChange], after: &[(String, i64)]) -> i64 {
    let moved: HashMap<&str, i64> = changes.iter().map(|c| (c.topic.as_str(), c.agents)).collect();
    after
        .iter()
        .map(|(topic, agents)| {
            let before = agents - moved.get(topic.as_str()).copied().unwrap_or(0);
            i64::from(before == 0 && *agents > 0) - i64::from(before > 0 && *agents == 0)
        })
        .sum()
}

macro_rules! sql_federation_store {
    ($name:ident, $pool:ty, $sql:ident) => {
        pooled_store!($name, $pool);

        #[async_trait]
        impl FederationStore for $name {
            async fn push(
                &self,
                tenant: &str,
                summary: &Summary,
                received_at: DateTime<Utc>,
            ) -> StoreResult<PushOutcome> {
                let agent = summary.agent_id.as_str();
                let mut tx = self.pool.begin().await?;
                // A write first: SQLite takes its write lock now rather than failing to
                // upgrade a read later; PostgreSQL locks the tenant's row.
                let seq: i64 = sqlx::query_scalar(BUMP_SEQ).bind(tenant).fetch_one(&mut *tx).await?;
                let stored: Option<i64> = sqlx::query_scalar(AGENT_TIMESTAMP)
                    .bind(tenant)
                    .bind(agent)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(stored) = stored.filter(|&at| at > to_millis(summary.timestamp)) {
                    return Ok(PushOutcome::Ignored { stored: from_millis(stored) });
                }

                let old: Vec<(String, i64)> =
                    sqlx::query_as(AGENT_TOPICS).bind(tenant).bind(agent).fetch_all(&mut *tx).await?;
                let changes = topic_changes(&old.into_iter().collect(), &summary.topic_counts);
                let mut topics_delta = 0;
                if !changes.is_empty() {
                    let after: Vec<(String, i64)> = sqlx::query_as($sql.merge_topics)
                        .bind(tenant)
                        .bind(seq)
                        .bind(Json(&changes))
                        .fetch_all(&mut *tx)
                        .await?;
                    topics_delta = topics_appeared(&changes, &after);
                    let gone: Vec<&str> =
                        changes.iter().filter(|c| c.count.is_none()).map(|c| c.topic.as_str()).collect();
                    if !gone.is_empty() {
                        sqlx::query($sql.delete_agent_topics)
                            .bind(tenant)
                            .bind(agent)
                            .bind(Json(&gone))
                            .execute(&mut *tx)
                            .await?;
                    }
                    if gone.len() < changes.len() {
                        sqlx::query($sql.put_agent_topics)
                            .bind(tenant)
                            .bind(agent)
                            .bind(Json(&changes))
                            .execute(&mut *tx)
                            .await?;
                    }
                }

                let old: Vec<String> =
                    sqlx::query_scalar(AGENT_FACTS).bind(tenant).bind(agent).fetch_all(&mut *tx).await?;
                let (added, removed, facts) = fact_changes(old.into_iter().collect(), &summary.fact_hashes);
                if !removed.is_empty() {
                    sqlx::query($sql.delete_agent_facts)
                        .bind(tenant)
                        .bind(agent)
                        .bind(Json(&removed))
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query($sql.remove_facts)
                        .bind(tenant)
                        .bind(seq)
                        .bind(Json(&removed))
                        .execute(&mut *tx)
                        .await?;
                }
                if !added.is_empty() {
                    sqlx::query($sql.add_agent_facts)
                        .bind(tenant)
                        .bind(agent)
                        .bind(Json(&added))
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query($sql.add_facts)
                        .bind(tenant)
                        .bind(seq)
                        .bind(Json(&added))
                        .execute(&mut *tx)
                        .await?;
                }
                let facts_delta: i64 = if added.is_empty() && removed.is_empty() {
                    0
                } else {
                    sqlx::query_scalar(FACTS_APPEARED).bind(tenant).bind(seq).fetch_one(&mut *tx).await?
                };
                if topics_delta != 0 || facts_delta != 0 {
                    sqlx::query(COUNT_LIVE)
                        .bind(tenant)
                        .bind(topics_delta)
                        .bind(facts_delta)
                        .execute(&mut *tx)
                        .await?;
                }

                let metadata = serde_json::to_string(&summary.metadata)
                    .map_err(|e| StoreError::backend("database", e))?;
                sqlx::query(PUT_AGENT)
                    .bind(tenant)
                    .bind(agent)
                    .bind(to_millis(summary.timestamp))
                    .bind(metadata)
                    .bind(to_millis(received_at))
                    .bind(seq)
                    .bind(i64::try_from(summary.topic_counts.len()).unwrap_or(i64::MAX))
                    .bind(i64::try_from(facts).unwrap_or(i64::MAX))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(PushOutcome::Accepted { cursor: seq })
            }

            async fn pull(&self, tenant: &str, since: Option<i64>) -> StoreResult<MergedView> {
                let mut tx = self.pool.begin().await?;
                if let Some(snapshot) = $sql.snapshot {
                    sqlx::query(snapshot).execute(&mut *tx).await?;
                }
                let counts: Option<(i64, i64, i64)> =
                    sqlx::query_as(TENANT).bind(tenant).fetch_optional(&mut *tx).await?;
                let (cursor, total_topics, total_facts) = counts.unwrap_or_default();
                let (agents, last_updated): (i64, Option<i64>) =
                    sqlx::query_as(AGENT_STATS).bind(tenant).fetch_one(&mut *tx).await?;
                let (topics, facts): (Vec<(String, i64, i64)>, Vec<(String, i64)>) = match since {
                    None => (
                        sqlx::query_as(TOPICS).bind(tenant).fetch_all(&mut *tx).await?,
                        sqlx::query_as(FACTS).bind(tenant).fetch_all(&mut *tx).await?,
                    ),
                    Some(since) => (
                        sqlx::query_as(TOPICS_SINCE).bind(tenant).bind(since).fetch_all(&mut *tx).await?,
                        sqlx::query_as(FACTS_SINCE).bind(tenant).bind(since).fetch_all(&mut *tx).await?,
                    ),
                };
                tx.commit().await?;
                let (topics, gone_topics): (Vec<_>, Vec<_>) = topics.into_iter().partition(|t| t.2 > 0);
                let (facts, gone_facts): (Vec<_>, Vec<_>) = facts.into_iter().partition(|f| f.1 > 0);
                Ok(MergedView {
                    topic_counts: topics.into_iter().map(|(topic, total, _)| (topic, total)).collect(),
                    fact_hashes: facts.into_iter().map(|(hash, _)| hash).collect(),
                    removed_topics: gone_topics.into_iter().map(|(topic, ..)| topic).collect(),
                    removed_fact_hashes: gone_facts.into_iter().map(|(hash, _)| hash).collect(),
                    contributing_agents: agents,
                    last_updated: last_updated.map(from_millis),
                    total_topics,
                    total_facts,
                    cursor,
                })
            }

            async fn agents(&self, tenant: &str) -> StoreResult<Vec<AgentRecord>> {
                let rows: Vec<AgentRow> = sqlx::query_as(AGENTS).bind(tenant).fetch_all(&self.pool).await?;
                rows.into_iter().map(AgentRecord::try_from).collect()
            }
        }
    };
}

sql_federation_store!(SqliteFederation, SqlitePool, SQLITE_SQL);
sql_federation_store!(PostgresFederation, PgPool, POSTGRES_SQL);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_diff_moves_totals_and_agents_by_the_difference() {
        let old: HashMap<String, i64> = [("a".into(), 2), ("b".into(), 3), ("c".into(), 1)].into();
        let new: BTreeMap<String, i64> = [("a".into(), 2), ("b".into(), 5), ("d".into(), 0)].into();
        let mut changes = topic_changes(&old, &new);
        changes.sort_by(|x, y| x.topic.cmp(&y.topic));
        let seen: Vec<(&str, i64, i64, Option<i64>)> =
            changes.iter().map(|c| (c.topic.as_str(), c.total, c.agents, c.count)).collect();
        assert_eq!(seen, [("b", 2, 0, Some(5)), ("c", -1, -1, None), ("d", 0, 1, Some(0))]);

        let after = [("b".to_string(), 2), ("c".to_string(), 0), ("d".to_string(), 1)];
        assert_eq!(topics_appeared(&changes, &after), 0, "c went, d came");

        let old: HashSet<String> = ["x".into(), "y".into()].into();
        let new = vec!["y".to_string(), "z".to_string(), "z".to_string()];
        let (added, removed, distinct) = fact_changes(old, &new);
        assert_eq!((added, removed, distinct), (vec![&"z".to_string()], vec!["x".to_string()], 2));
    }
}
