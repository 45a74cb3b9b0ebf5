-- GET /admin/audit filters by kind and by user, paging by id.
CREATE INDEX audit_log_kind_idx ON audit_log (kind, id);
CREATE INDEX audit_log_user_idx ON audit_log (user_id, id);
-- An event written twice (a batch that timed out but committed, moved
-- again out of the Redis spill stream) is stored once.
ALTER TABLE audit_log ADD COLUMN event_id TEXT;
CREATE UNIQUE INDEX audit_log_event_idx ON audit_log (event_id);
