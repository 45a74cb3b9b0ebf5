-- generation: how many times the session's refresh hash has rotated. Every
-- store that holds a copy (this ledger, the Redis cache) counts the same
-- rotations, so when a copy comes back stale (Redis after a pause, a
-- snapshot restore or a failover) the higher generation says which one is
-- newer: the newest rotation wins wherever it was recorded.
ALTER TABLE sessions ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
