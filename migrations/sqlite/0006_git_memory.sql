-- Git memory (DiffMem): one memory repo per user id, the remote it syncs with and how its
-- last sync went. Remote tokens are sealed (AES-256-GCM under a key derived from the
-- deployment's secret) and never written into a repo's .git/config.
CREATE TABLE memory_repos (
    user_id       TEXT    PRIMARY KEY,
    repo_url      TEXT,                           -- NULL: a local repo without a remote
    branch        TEXT    NOT NULL,
    sealed_token  TEXT,                           -- base64(nonce || ciphertext)
    status        TEXT    NOT NULL,               -- active | conflict | error
    last_sync     BIGINT,                         -- ms since the Unix epoch
    last_error    TEXT,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);

-- GitHub tokens exchanged at /auth/github, sealed like repo tokens: what /repos/setup clones
-- with when the request names no token of its own.
CREATE TABLE github_tokens (
    user_id       TEXT    PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    sealed_token  TEXT    NOT NULL,
    updated_at    BIGINT  NOT NULL
);

-- Exclusive rights held for a while by one process (the writer of a memory repo): whoever
-- holds an unexpired lease may act; an expired one is anyone's.
CREATE TABLE leases (
    name        TEXT    PRIMARY KEY,
    holder      TEXT    NOT NULL,
    expires_at  BIGINT  NOT NULL
);
