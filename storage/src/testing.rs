//! Helpers for tests that talk to the real services `scripts/services.sh up` starts.
//! A test asks for a service; when its variable is unset the test is skipped with a note,
//! unless `ENGRAM_TEST_REQUIRE_SERVICES=1` (as `scripts/test.sh` sets), where it fails.

use std::str::FromStr;

use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;

use crate::config::{Config, RawConfig, S3Config, Secret};

/// The value of a service variable, or `None` (test skipped) when services are optional.
pub fn service_var(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var("ENGRAM_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("{name} is unset: run `scripts/services.sh up` and `eval \"$(scripts/services.sh env)\"`")
        }
        _ => {
            eprintln!("skipped: {name} is unset (run scripts/services.sh up to test this backend)");
            None
        }
    }
}

/// A new, empty PostgreSQL database for one test; returns its URL.
pub async fn fresh_postgres_url() -> Option<String> {
    let admin_url = service_var("ENGRAM_TEST_POSTGRES_URL")?;
    let name = format!("engram_test_{}", ulid::Ulid::generate().to_string().to_lowercase());
    let mut admin = PgConnectOptions::from_str(&admin_url)
        .expect("ENGRAM_TEST_POSTGRES_URL is a postgres URL")
        .connect()
        .await
        .expect("the test PostgreSQL answers");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("can create a test database");
    let mut url = url::Url::parse(&admin_url).expect("a URL");
    url.set_path(&name);
    Some(url.to_string())
}

pub fn redis_url() -> Option<String> {
    service_var("ENGRAM_TEST_REDIS_URL")
}

/// The test bucket under a prefix of its own, so tests never see each other's objects.
pub fn s3_config() -> Option<S3Config> {
    let endpoint = service_var("ENGRAM_TEST_S3_ENDPOINT_URL")?;
    let var = |name: &str| service_var(name).unwrap_or_else(|| panic!("{name} is unset"));
    Some(S3Config {
        bucket: var("ENGRAM_TEST_S3_BUCKET"),
        prefix: format!("test-{}/", ulid::Ulid::generate()),
        endpoint_url: Some(endpoint),
        region: "us-east-1".to_string(),
        credentials: Some((
            var("ENGRAM_TEST_AWS_ACCESS_KEY_ID"),
            Secret::new(var("ENGRAM_TEST_AWS_SECRET_ACCESS_KEY")),
        )),
    })
}

/// The environment variables that point Engram at the test S3 server under a fresh prefix.
pub fn s3_env() -> Option<Vec<(String, String)>> {
    let s3 = s3_config()?;
    let (key, secret) = s3.credentials.expect("test credentials");
    Some(vec![
        ("S3_BUCKET".into(), s3.bucket),
        ("S3_PREFIX".into(), s3.prefix),
        ("S3_ENDPOINT_URL".into(), s3.endpoint_url.expect("endpoint")),
        ("AWS_ACCESS_KEY_ID".into(), key),
        ("AWS_SECRET_ACCESS_KEY".into(), secret.expose().to_string()),
        ("AWS_REGION".into(), s3.region),
    ])
}

/// A config for the embedded default in a data dir of the test's own, plus `extra` pairs.
pub fn config_in(data_dir: &std::path::Path, extra: &[(String, String)]) -> Config {
    let mut pairs = vec![
        ("ENGRAM_DATA_DIR".to_string(), data_dir.display().to_string()),
        ("ENGRAM_BIND".to_string(), "127.0.0.1:0".to_string()),
    ];
    // The embedding model installed by scripts/test.sh, shared by every test's data dir.
    if let Ok(model_dir) = std::env::var("ENGRAM_MODEL_DIR") {
        pairs.push(("ENGRAM_MODEL_DIR".to_string(), model_dir));
    }
    pairs.extend_from_slice(extra);
    Config::from_raw(&RawConfig::layered(pairs, [], [])).expect("a valid test config")
}

/// Instantiates a conformance suite on every backend: for each `backend => open`, a module
/// `backend` of `#[tokio::test]`s, one per case. Each test opens a fresh store with
/// `open().await` (an `async fn() -> Option<S>` beside the call: `None` skips the backend
/// when its service is absent and not required) and passes it to `case(store)`, an
/// `async fn` beside the call too.
///
/// ```ignore
/// storage::store_suite!(sqlite => open_sqlite, postgres => open_postgres; [puts_and_gets, lists_by_prefix]);
/// ```
#[macro_export]
macro_rules! store_suite {
    ($($backend:ident => $open:ident),+ $(,)? ; $cases:tt) => {
        $( $crate::store_suite!(@backend $backend, $open, $cases); )+
    };
    (@backend $backend:ident, $open:ident, [$($case:ident),+ $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(store) = super::$open().await else { return };
                    super::$case(store).await;
                }
            )+
        }
    };
}

/// Runs one raw statement on a SQLite file (`sqlite`) or a PostgreSQL URL (`postgres`): for
/// tests that change a queue's tables behind Engram's back.
pub async fn execute_raw_sql(target: RawSqlTarget<'_>, statement: &str) -> anyhow::Result<()> {
    let statement = sqlx::AssertSqlSafe(statement.to_string());
    match target {
        RawSqlTarget::Sqlite(path) => {
            let pool = crate::sql::open_sqlite(path).await?;
            sqlx::query(statement).execute(&pool).await?;
        }
        RawSqlTarget::Postgres(url) => {
            let pool = sqlx::PgPool::connect(url).await?;
            sqlx::query(statement).execute(&pool).await?;
        }
    }
    Ok(())
}

/// Where [`execute_raw_sql`] runs its statement.
pub enum RawSqlTarget<'a> {
    Sqlite(&'a std::path::Path),
    Postgres(&'a str),
}
