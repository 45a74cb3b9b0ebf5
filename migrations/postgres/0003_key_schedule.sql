-- A key's role is derived from times, so every node reaches the same answer
-- without coordination: the newest key whose activates_at has passed signs;
-- a key not yet active is a published standby; a superseded key verifies
-- until the last token it signed expires; a revoked key does nothing.
DROP INDEX signing_keys_one_active;
ALTER TABLE signing_keys DROP COLUMN state;
ALTER TABLE signing_keys ADD COLUMN activates_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE signing_keys ADD COLUMN revoked_at BIGINT;
UPDATE signing_keys SET activates_at = created_at;
