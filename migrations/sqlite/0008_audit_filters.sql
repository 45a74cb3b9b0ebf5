-- GET /admin/audit filters by kind and by user, paging by id.
CREATE INDEX audit_log_kind_idx ON audit_log (kind, id);
CREATE INDEX audit_log_user_idx ON audit_log (user_id, id);
