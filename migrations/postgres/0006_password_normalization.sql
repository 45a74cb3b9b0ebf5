-- Passwords are hashed from their Unicode NFKC form (DESIGN.md §2). Hashes
-- made before that were made from the raw input: they stay valid, and a
-- login whose input NFKC changes also tries the raw form against them, then
-- replaces the hash. Every existing row, and any row an older binary still
-- writes during a rolling upgrade, is such a hash (the default).
ALTER TABLE users ADD COLUMN password_normalized BOOLEAN NOT NULL DEFAULT FALSE;
-- The replacement finds its row by the old hash (unique by its salt); only
-- the pre-normalisation rows are indexed, and they leave the index as users
-- log in.
CREATE INDEX users_pre_nfkc_idx ON users (password_hash) WHERE NOT password_normalized;
