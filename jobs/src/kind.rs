//! The machinery of job kinds: the `Kind` trait a kind implements (typed payload, policy,
//! access, run), its type-erased form, and the `Registry` of every kind a process runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::context::JobContext;
use crate::error::JobError;

/// How a kind's jobs are run and retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// An attempt running longer fails (and is retried like any failure).
    pub timeout: Duration,
    pub max_attempts: i32,
    /// Delay before the second attempt; doubles for each further one, with jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Default priority; higher runs first.
    pub priority: i32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            max_attempts: 5,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(600),
            priority: 0,
        }
    }
}

/// Who may submit a kind's jobs through the generic job routes (`POST /api/v1/jobs`, the
/// batch route and schedules). Routes of a service that start jobs check their caller
/// themselves and submit on its behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Any caller with `jobs:rw`; the job acts only on its owner's data (`Kind::acts_for`).
    Tenant,
    /// Administrators only: upkeep that reaches every tenant's data.
    Admin,
    /// Exists for tests and benchmarks (it can run programs): registered only when
    /// `ENGRAM_ENABLE_TEST_KINDS` is set, and then for administrators only.
    Test,
}

/// A payload that does not fit its kind, naming the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PayloadError {
    pub field: String,
    pub message: String,
}

/// One kind of job with a typed payload.
#[async_trait]
pub trait Kind: Send + Sync + 'static {
    type Payload: Serialize + DeserializeOwned + Send + 'static;
    const NAME: &'static str;
    /// Declared by every kind, so the list of what tenants may submit is explicit.
    const ACCESS: Access;

    fn policy(&self) -> Policy {
        Policy::default()
    }

    /// The attempt timeout for this payload; the policy's by default.
    fn timeout(&self, _payload: &Self::Payload) -> Duration {
        self.policy().timeout
    }

    /// The user whose data the job works on when the payload names one (`user_id`); a
    /// tenant may submit jobs only for itself. Kinds that act for the job's owner name none.
    fn acts_for<'a>(&self, _payload: &'a Self::Payload) -> Option<&'a str> {
        None
    }

    async fn run(&self, payload: Self::Payload, ctx: &JobContext) -> Result<Value, JobError>;
}

/// A kind with its payload type erased, as the registry holds it.
#[async_trait]
pub trait ErasedKind: Send + Sync {
    fn name(&self) -> &'static str;
    fn policy(&self) -> Policy;
    fn access(&self) -> Access;
    /// Checks the payload against the kind; returns the user it acts for, if it names one.
    fn check_payload(&self, payload: &Value) -> Result<Option<String>, PayloadError>;
    fn timeout(&self, payload: &Value) -> Duration;
    async fn run(&self, payload: Value, ctx: &JobContext) -> Result<Value, JobError>;
}

fn parse_payload<P: DeserializeOwned>(payload: &Value) -> Result<P, PayloadError> {
    serde_path_to_error::deserialize(payload).map_err(|e| {
        let path = e.path().to_string();
        PayloadError {
            field: if path == "." { "payload".to_string() } else { format!("payload.{path}") },
            message: e.into_inner().to_string(),
        }
    })
}

#[async_trait]
impl<K: Kind> ErasedKind for K {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn policy(&self) -> Policy {
        Kind::policy(self)
    }

    fn access(&self) -> Access {
        K::ACCESS
    }

    fn check_payload(&self, payload: &Value) -> Result<Option<String>, PayloadError> {
        let parsed = parse_payload::<K::Payload>(payload)?;
        if let Some(field) = crate::nul::find_nul(payload, "payload") {
            return Err(PayloadError {
                field,
                message: "contains a NUL character (U+0000), which cannot be stored".into(),
            });
        }
        Ok(self.acts_for(&parsed).map(str::to_string))
    }

    fn timeout(&self, payload: &Value) -> Duration {
        match parse_payload::<K::Payload>(payload) {
            Ok(payload) => Kind::timeout(self, &payload),
            Err(_) => Kind::policy(self).timeout,
        }
    }

    async fn run(&self, payload: Value, ctx: &JobContext) -> Result<Value, JobError> {
        let payload =
            parse_payload::<K::Payload>(&payload).map_err(|e| JobError::Permanent(e.to_string()))?;
        Kind::run(self, payload, ctx).await
    }
}

/// Every kind this build knows, by name.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn ErasedKind>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, kind: impl ErasedKind + 'static) -> Self {
        self.kinds.insert(kind.name(), Arc::new(kind));
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn ErasedKind>> {
        self.kinds.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }

    /// Only the named kinds (for `engram-worker --kinds`); an unknown name is an error.
    pub fn only(&self, names: &[String]) -> Result<Registry, String> {
        if names.is_empty() {
            return Ok(self.clone());
        }
        let mut kinds = BTreeMap::new();
        for name in names {
            let kind = self.kinds.get(name.as_str()).ok_or_else(|| {
                format!(
                    "unknown job kind {name:?}; known kinds: {}",
                    self.names().collect::<Vec<_>>().join(", ")
                )
            })?;
            kinds.insert(kind.name(), kind.clone());
        }
        Ok(Registry { kinds })
    }
}
