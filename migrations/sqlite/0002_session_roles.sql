-- Roles as of the last login or refresh, comma-separated: refresh uses them
-- only while the database is unreachable (the session is then read from
-- Redis), so a token can still be issued; normally roles come from users.
ALTER TABLE sessions ADD COLUMN roles TEXT NOT NULL DEFAULT '';
