-- security_version: bumped by every change that must end what a login
-- already under way could still produce (password change, deactivation,
-- logout-all). A session is created only while the version its login read
-- is still current, so a login racing such a change yields nothing usable.
ALTER TABLE users ADD COLUMN security_version BIGINT NOT NULL DEFAULT 0;
-- When the user's roles last changed (milliseconds): nodes load the roles of
-- users changed within a refresh-token lifetime at start, so a token (or a
-- refresh served from a session's snapshot) never carries a lost role.
ALTER TABLE users ADD COLUMN roles_changed_at BIGINT;
CREATE INDEX users_roles_changed_idx ON users (roles_changed_at);
