-- SQLite twin of migrations/postgres/0004_access.sql.
-- Roles, API keys, the audit log and the invalidation log.

-- A role holds `resource:action` permissions (`*` wildcards), stored as one
-- space-separated list. `admin` is built in and holds everything.
CREATE TABLE roles (
    name        TEXT PRIMARY KEY,
    permissions TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
INSERT INTO roles (name, permissions, created_at, updated_at) VALUES ('admin', '*', 0, 0);

-- `hf_<prefix>_<secret>`: the prefix finds the row, only the SHA-256 of the
-- whole key is kept. Scopes are space-separated.
CREATE TABLE api_keys (
    id          BLOB PRIMARY KEY,
    user_id     BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    prefix      TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id);

-- Security events, append only.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      BIGINT NOT NULL,
    kind    TEXT NOT NULL,
    user_id TEXT,
    detail  TEXT NOT NULL
);
CREATE INDEX audit_log_at_idx ON audit_log (at);

-- Every invalidation a node published, so a node that missed the pub/sub
-- message (Redis down, node restarting) catches up by polling `seq`.
CREATE TABLE invalidations (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    at    BIGINT NOT NULL,
    node  TEXT NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX invalidations_at_idx ON invalidations (at);
