-- SQLite twin of migrations/postgres/0006_password_normalization.sql.
-- Passwords are hashed from their Unicode NFKC form; existing rows (the
-- default) hold hashes of the raw input.
ALTER TABLE users ADD COLUMN password_normalized BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX users_pre_nfkc_idx ON users (password_hash) WHERE NOT password_normalized;
