-- One user model for every service: accounts, login sessions with their rotating refresh
-- tokens, and API keys for machine clients. Times are milliseconds since the Unix epoch.
CREATE TABLE users (
    id             TEXT    PRIMARY KEY,                 -- ULID
    email          TEXT    UNIQUE,                      -- lower-cased; NULL for GitHub-only users
    password_hash  TEXT,                                -- argon2id PHC string; NULL without a password
    display_name   TEXT    NOT NULL DEFAULT '',
    role           TEXT    NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    org_id         TEXT,
    team_id        TEXT,
    github_login   TEXT    UNIQUE,                      -- lower-cased
    settings       TEXT    NOT NULL DEFAULT '{}',
    created_at     INTEGER NOT NULL
);

-- A login: access tokens name their session, so revoking it (logout, refresh token reuse)
-- ends them at once.
CREATE TABLE sessions (
    id              TEXT    PRIMARY KEY,
    user_id         TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at      INTEGER NOT NULL,
    revoked_at      BIGINT,
    revoked_reason  TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Refresh tokens of a session, stored as SHA-256 hashes of their secrets. A token is used
-- once (rotation); a second use revokes the whole session.
CREATE TABLE refresh_tokens (
    token_hash  TEXT    PRIMARY KEY,
    session_id  TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- API keys (`ek_…`), stored as SHA-256 hashes of their secrets, with the scopes they grant.
CREATE TABLE api_keys (
    id            TEXT    PRIMARY KEY,
    user_id       TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          TEXT    NOT NULL,
    secret_hash   TEXT    NOT NULL UNIQUE,
    scopes        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);
CREATE INDEX api_keys_user ON api_keys (user_id);
