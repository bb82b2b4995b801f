-- Invitations to register when ENGRAM_REGISTRATION=invite: each admits one account before it
-- expires, for one email address when it names one. The code handed out is stored only as
-- its SHA-256 hash. Times are milliseconds since the Unix epoch.
CREATE TABLE invites (
    id          TEXT    PRIMARY KEY,                    -- ULID
    code_hash   TEXT    NOT NULL UNIQUE,
    email       TEXT,                                   -- lower-cased; NULL: any address
    created_by  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    used_by     TEXT
);
