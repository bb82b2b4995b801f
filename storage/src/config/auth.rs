//! Who may call and how: the token secret and the static admin key, SSO gateways to trust,
//! the GitHub API for sign-in, who may register, token lifetimes, login and registration
//! rate limits, lockout after repeated failures, and the proxies whose `X-Forwarded-For`
//! names the client.

use std::time::Duration;

use super::{
    ConfigError, ConnectionUrl, IpRange, RawConfig, Secret, parse_bool, parse_ip_ranges, parse_number,
    parse_url,
};

pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

/// Keys this part reads, with what each is for.
pub(super) const KEYS: &[(&str, &str)] = &[
    ("JWT_SECRET", "HS256 secret for access tokens; unset = generated once into the data dir"),
    ("API_KEY", "static admin API key accepted as a Bearer token"),
    ("SSO_ENABLED", "trust SSO gateway headers from trusted proxies"),
    ("SSO_TRUSTED_PROXIES", "comma-separated addresses or CIDR ranges whose SSO headers are trusted"),
    ("SSO_SHARED_SECRET", "secret an SSO gateway sends in X-SSO-Secret to have its headers trusted"),
    (
        "GITHUB_API_URL",
        "GitHub API base URL for /auth/github token checks (GitHub Enterprise: https://host/api/v3)",
    ),
    (
        "ENGRAM_REGISTRATION",
        "who may create an account: open (anyone), invite (with an administrator's invitation) or closed",
    ),
    ("ACCESS_TOKEN_TTL_SECS", "lifetime of access tokens (JWT), in seconds"),
    ("REFRESH_TOKEN_TTL_DAYS", "lifetime of refresh tokens, in days"),
    ("LOGIN_RATE_LIMIT", "login attempts one client address may make per 15 minutes"),
    ("REGISTER_RATE_LIMIT", "registrations one client address may make per 15 minutes"),
    ("LOGIN_MAX_FAILURES", "failed logins in a row that lock an account"),
    ("LOGIN_LOCKOUT_SECS", "how long a locked account refuses logins, in seconds"),
    ("TRUSTED_PROXIES", "addresses or CIDR ranges of reverse proxies whose X-Forwarded-For is believed"),
];

/// The window the per-address limits count in.
pub const RATE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Who may create an account (`ENGRAM_REGISTRATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Anyone who can reach the server registers, or signs in with GitHub for the first time.
    Open,
    /// Registering takes an invitation an administrator issued; GitHub sign-in only reaches
    /// accounts that exist.
    Invite,
    /// No new accounts through the API (SSO gateways still provision theirs).
    Closed,
}

impl Registration {
    pub fn as_str(self) -> &'static str {
        match self {
            Registration::Open => "open",
            Registration::Invite => "invite",
            Registration::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub jwt_secret: Option<Secret>,
    pub api_key: Option<Secret>,
    pub sso_enabled: bool,
    pub sso_trusted_proxies: Vec<IpRange>,
    pub sso_shared_secret: Option<Secret>,
    pub github_api_url: ConnectionUrl,
    pub registration: Registration,
    pub access_token_lifetime: Duration,
    pub refresh_token_lifetime: Duration,
    /// Per client address per `RATE_WINDOW`.
    pub login_rate_limit: u64,
    /// Per client address per `RATE_WINDOW`.
    pub register_rate_limit: u64,
    pub login_max_failures: u64,
    pub login_lockout: Duration,
    pub trusted_proxies: Vec<IpRange>,
}

impl AuthConfig {
    pub(super) fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        let registration = match raw.get("ENGRAM_REGISTRATION").map(str::to_ascii_lowercase).as_deref() {
            None | Some("open") => Registration::Open,
            Some("invite") => Registration::Invite,
            Some("closed") => Registration::Closed,
            Some(other) => {
                return Err(ConfigError::new(
                    "ENGRAM_REGISTRATION",
                    format!("{other:?} is not a registration mode; set it to open, invite or closed"),
                ));
            }
        };
        let sso_enabled = parse_bool(raw, "SSO_ENABLED", false)?;
        if sso_enabled
            && raw.get("SSO_TRUSTED_PROXIES").is_none_or(|v| v.trim().is_empty())
            && raw.get("SSO_SHARED_SECRET").is_none_or(str::is_empty)
        {
            return Err(ConfigError::new(
                "SSO_ENABLED",
                "is true but nothing says whose SSO headers to trust; set SSO_TRUSTED_PROXIES or SSO_SHARED_SECRET",
            ));
        }
        Ok(Self {
            jwt_secret: raw.get("JWT_SECRET").map(Secret::new),
            api_key: raw.get("API_KEY").map(Secret::new),
            sso_enabled,
            sso_trusted_proxies: parse_ip_ranges(
                "SSO_TRUSTED_PROXIES",
                raw.get("SSO_TRUSTED_PROXIES").unwrap_or(""),
            )?,
            sso_shared_secret: raw.get("SSO_SHARED_SECRET").filter(|s| !s.is_empty()).map(Secret::new),
            github_api_url: parse_url(
                raw.get("GITHUB_API_URL").unwrap_or(DEFAULT_GITHUB_API_URL),
                "GITHUB_API_URL",
                &["https", "http"],
                DEFAULT_GITHUB_API_URL,
            )?,
            registration,
            access_token_lifetime: Duration::from_secs(parse_number(
                raw,
                "ACCESS_TOKEN_TTL_SECS",
                3600,
                60,
                7 * 24 * 3600,
            )?),
            refresh_token_lifetime: Duration::from_secs(
                parse_number(raw, "REFRESH_TOKEN_TTL_DAYS", 30, 1, 365)? * 24 * 3600,
            ),
            login_rate_limit: parse_number(raw, "LOGIN_RATE_LIMIT", 10, 1, 1_000_000)?,
            register_rate_limit: parse_number(raw, "REGISTER_RATE_LIMIT", 5, 1, 1_000_000)?,
            login_max_failures: parse_number(raw, "LOGIN_MAX_FAILURES", 5, 1, 1000)?,
            login_lockout: Duration::from_secs(parse_number(
                raw,
                "LOGIN_LOCKOUT_SECS",
                900,
                1,
                7 * 24 * 3600,
            )?),
            trusted_proxies: parse_ip_ranges("TRUSTED_PROXIES", raw.get("TRUSTED_PROXIES").unwrap_or(""))?,
        })
    }

    /// `jwt_file`: where the generated `JWT_SECRET` is kept when it is unset.
    pub(super) fn describe(&self, jwt_file: &std::path::Path) -> Vec<(&'static str, Option<String>)> {
        let ranges = |list: &[IpRange]| list.iter().map(IpRange::to_string).collect::<Vec<_>>().join(",");
        let masked = |s: &Option<Secret>| s.as_ref().map(|_| "****".to_string());
        let jwt = match &self.jwt_secret {
            Some(_) => "****".to_string(),
            None => format!("(unset: generated into {})", jwt_file.display()),
        };
        let proxies = ranges(&self.trusted_proxies);
        vec![
            ("JWT_SECRET", Some(jwt)),
            ("API_KEY", masked(&self.api_key)),
            ("SSO_ENABLED", Some(self.sso_enabled.to_string())),
            ("SSO_TRUSTED_PROXIES", Some(ranges(&self.sso_trusted_proxies))),
            ("SSO_SHARED_SECRET", masked(&self.sso_shared_secret)),
            ("GITHUB_API_URL", Some(self.github_api_url.masked())),
            ("ENGRAM_REGISTRATION", Some(self.registration.as_str().to_string())),
            ("ACCESS_TOKEN_TTL_SECS", Some(self.access_token_lifetime.as_secs().to_string())),
            ("REFRESH_TOKEN_TTL_DAYS", Some((self.refresh_token_lifetime.as_secs() / 86_400).to_string())),
            ("LOGIN_RATE_LIMIT", Some(self.login_rate_limit.to_string())),
            ("REGISTER_RATE_LIMIT", Some(self.register_rate_limit.to_string())),
            ("LOGIN_MAX_FAILURES", Some(self.login_max_failures.to_string())),
            ("LOGIN_LOCKOUT_SECS", Some(self.login_lockout.as_secs().to_string())),
            ("TRUSTED_PROXIES", Some(proxies)),
        ]
    }
}
