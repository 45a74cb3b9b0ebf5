//! Sessions: login, refresh-token rotation with reuse detection
//! (RFC 6819 §5.2.2.3), logout, logout-all, listing and deleting.
//!
//! A refresh token is `<session id>.<secret>`; the secret is 256 random bits
//! and only its SHA-256 is stored (a fast hash is right for a high-entropy
//! secret; Argon2 is for passwords).

use crate::auth::audit::Audit;
use crate::auth::error::AuthError;
use crate::auth::passwords::{HashSlot, PasswordHasher};
use crate::auth::rate_limit::RateLimits;
use crate::auth::tokens::AccessTokens;
use crate::cache::bus::{Bus, Invalidation};
use crate::store::{
    Rotation, Session, SessionStore, StoreError, Swap, UnixTime, User, UserStatus, UserStore,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::sync::Arc;
use uuid::Uuid;

/// What login and refresh hand back.
#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: String,
    pub refresh_expires_in: i64,
    pub session_id: Uuid,
}

/// Who is asking, kept on the session for the owner's session list.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub ip: Option<String>,
    /// The key its per-address limits count under: the address, or an
    /// IPv6 client's /64, so rotating the low bits changes nothing.
    pub rate_key: Option<String>,
    pub user_agent: Option<String>,
}

pub struct Sessions {
    users: Arc<dyn UserStore>,
    sessions: Arc<dyn SessionStore>,
    hasher: Arc<PasswordHasher>,
    tokens: Arc<AccessTokens>,
    bus: Arc<Bus>,
    audit: Arc<Audit>,
    limits: Arc<RateLimits>,
    refresh_ttl: i64,
}

/// What `Sessions` is built from, named so the wiring in `app.rs` reads.
pub struct SessionParts {
    pub users: Arc<dyn UserStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub hasher: Arc<PasswordHasher>,
    pub tokens: Arc<AccessTokens>,
    pub bus: Arc<Bus>,
    pub audit: Arc<Audit>,
    pub limits: Arc<RateLimits>,
    pub refresh_ttl: i64,
}

impl Sessions {
    pub fn new(d: SessionParts) -> Self {
        // From the first scrape: `increase()` misses a counter's first
        // appearance, and these are alerted on.
        metrics::counter!("holdfast_refresh_reuse_total").increment(0);
        metrics::counter!("holdfast_logins_shed_total").increment(0);
        Self {
            users: d.users,
            sessions: d.sessions,
            hasher: d.hasher,
            tokens: d.tokens,
            bus: d.bus,
            audit: d.audit,
            limits: d.limits,
            refresh_ttl: d.refresh_ttl,
        }
    }

    /// A place in the password-hash queue, taken before a login touches
    /// anything: when there is none the login is refused (503) at once.
    pub fn hash_slot(&self) -> Result<HashSlot<'_>, AuthError> {
        let slot = self.hasher.reserve();
        if slot.is_err() {
            metrics::counter!("holdfast_logins_shed_total").increment(1);
        }
        Ok(slot?)
    }

    /// Same answer, and the same Argon2 work, for an unknown login and a
    /// wrong password. A disabled account is named only after the right
    /// password, so the status leaks to nobody else.
    pub async fn login(
        &self,
        slot: HashSlot<'_>,
        login: &str,
        password: String,
        client: Client,
        now: UnixTime,
    ) -> Result<TokenPair, AuthError> {
        let user = self.check_password(slot, login, password, &client).await?;
        if user.status == UserStatus::Disabled {
            self.audit
                .record(
                    "login_failed",
                    Some(user.id),
                    serde_json::json!({"reason": "account_disabled", "ip": client.ip}),
                )
                .await?;
            return Err(AuthError::AccountDisabled);
        }
        let (secret, hash) = new_refresh_secret()?;
        let session = Session {
            id: Uuid::new_v4(),
            user_id: user.id,
            refresh_hash: hash,
            created_at: now,
            last_used_at: now,
            expires_at: now + self.refresh_ttl,
            user_agent: client.user_agent.map(|ua| ua.chars().take(256).collect()),
            ip: client.ip,
            revoked_at: None,
            roles: user.roles.clone(),
            generation: 0,
        };
        self.start(&user, &session).await?;
        self.audit
            .record(
                "login_succeeded",
                Some(user.id),
                serde_json::json!({"session_id": session.id, "ip": session.ip}),
            )
            .await?;
        self.pair(&user, &session, &secret, now)
    }

    /// The user whose password `password` is, counted against the
    /// account's rate limits; a failure is audited.
    async fn check_password(
        &self,
        slot: HashSlot<'_>,
        login: &str,
        password: String,
        client: &Client,
    ) -> Result<User, AuthError> {
        let user = self.users.by_login(login.trim()).await?;
        // Unknown logins are limited too, under the name tried, so a lock
        // says nothing about whether an account exists.
        let account = user
            .as_ref()
            .map_or_else(|| login.trim().to_lowercase(), |u| u.id.to_string());
        let address = client.rate_key.as_deref().unwrap_or("unknown");
        let attempt = self.limits.reserve_account(&account, address).await?;
        let phc = user.as_ref().map(|u| u.password_hash.clone());
        let matched = match slot.verify(password, phc).await {
            Ok(matched) => matched,
            Err(e) => {
                // No verdict (the hashing failed): the attempt does not count.
                self.limits.account_undecided(attempt).await;
                return Err(e.into());
            }
        };
        match (user, matched) {
            (Some(user), true) => {
                self.limits.account_succeeded(attempt).await;
                Ok(user)
            }
            (user, _) => {
                let user_id = user.map(|u| u.id);
                let login: String = login.trim().chars().take(64).collect();
                if let Some(lock) = self.limits.account_failed(attempt).await {
                    self.audit
                        .record_anonymous(
                            "account_locked",
                            user_id,
                            serde_json::json!({"login": login, "lock_secs": lock.as_secs()}),
                        )
                        .await;
                }
                self.audit
                    .record_anonymous(
                        "login_failed",
                        user_id,
                        serde_json::json!({"login": login, "ip": client.ip}),
                    )
                    .await;
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    /// Stores the new session only if no password change, deactivation or
    /// logout-all was answered since `user` was read: a login racing one of
    /// them yields nothing (DESIGN.md §3).
    async fn start(&self, user: &User, session: &Session) -> Result<(), AuthError> {
        match self
            .sessions
            .create(session, Some(user.security_version))
            .await
        {
            Ok(()) => Ok(()),
            Err(StoreError::Superseded) => {
                self.audit
                    .record(
                        "login_failed",
                        Some(user.id),
                        serde_json::json!({"reason": "superseded", "ip": session.ip}),
                    )
                    .await?;
                Err(AuthError::InvalidCredentials)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Rotation with reuse detection (RFC 6819 §5.2.2.3). The one place
    /// that decides what a used refresh hash means: the stores only report
    /// that it was rotated away from, and how the session stands now.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        now: UnixTime,
    ) -> Result<TokenPair, AuthError> {
        let (sid, presented) = parse_refresh_token(refresh_token)?;
        let (next_secret, next_hash) = new_refresh_secret()?;
        let session = match self
            .sessions
            .rotate(Swap {
                id: sid,
                presented: &presented,
                next: &next_hash,
                at: now,
            })
            .await?
        {
            Rotation::Rotated(session) => session,
            // Our own retry of a rotation whose answer was lost: the session
            // already holds the hash we asked for, 256 fresh random bits
            // nobody else has.
            Rotation::AlreadyRotated(Some(session)) if session.holds(&next_hash, now) => session,
            // Anybody else presenting a used hash: theft signal.
            Rotation::AlreadyRotated(_) => return self.reused(sid, now).await,
            Rotation::Mismatch => return Err(AuthError::TokenInvalid),
            Rotation::Gone => return Err(AuthError::Revoked),
        };
        self.refreshed(session, &next_secret, now).await
    }

    /// The tokens of a rotated session, for its user as they are now.
    async fn refreshed(
        &self,
        session: Session,
        secret: &str,
        now: UnixTime,
    ) -> Result<TokenPair, AuthError> {
        let sid = session.id;
        match self.users.by_id(session.user_id).await {
            Ok(Some(user)) if user.status == UserStatus::Disabled => {
                self.sessions.revoke(sid, now).await?;
                self.bus
                    .publish(Invalidation::SessionRevoked { sid }, now)
                    .await?;
                Err(AuthError::AccountDisabled)
            }
            Ok(Some(user)) => self.pair(&user, &session, secret, now),
            Ok(None) => Err(AuthError::Revoked),
            // The session came from the cache and is live; a disabled
            // account would have had it revoked. Issue with the roles
            // the session recorded at login (explicit degradation).
            Err(e) if e.is_unavailable() => {
                tracing::warn!(session_id = %sid, "refresh served without the database: roles from the session, less any known lost");
                let roles = self.tokens.snapshot_roles(session.user_id, &session.roles);
                self.pair_for(session.user_id, &roles, &session, secret, now)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A used refresh token presented again: the whole session is revoked,
    /// everywhere, and the reuse audited.
    async fn reused(&self, sid: Uuid, now: UnixTime) -> Result<TokenPair, AuthError> {
        // Counted when detected, whether or not the revocation below lands.
        metrics::counter!("holdfast_refresh_reuse_total").increment(1);
        self.sessions.revoke(sid, now).await?;
        self.bus
            .publish(Invalidation::SessionRevoked { sid }, now)
            .await?;
        // Whose session was stolen, for the audit log (best effort: the
        // revocation above does not depend on it).
        let user_id = match self.sessions.get(sid).await {
            Ok(session) => session.map(|s| s.user_id),
            Err(e) => {
                tracing::warn!(error = %e, session_id = %sid, "refresh reuse audited without its user");
                None
            }
        };
        self.audit
            .record(
                "refresh_reuse",
                user_id,
                serde_json::json!({"session_id": sid}),
            )
            .await?;
        Err(AuthError::RefreshReuse)
    }

    /// Revokes the caller's session, and the session of `refresh_token` if
    /// it is another one of the same user.
    pub async fn logout(
        &self,
        user_id: Uuid,
        sid: Uuid,
        refresh_token: Option<&str>,
        now: UnixTime,
    ) -> Result<(), AuthError> {
        self.revoke_one(sid, now).await?;
        if let Some((other, _)) = refresh_token.and_then(|t| parse_refresh_token(t).ok())
            && other != sid
            && let Some(session) = self.sessions.get(other).await?
            && session.user_id == user_id
        {
            self.revoke_one(other, now).await?;
        }
        tracing::info!(%user_id, session_id = %sid, "logout");
        Ok(())
    }

    pub async fn logout_all(&self, user_id: Uuid, now: UnixTime) -> Result<(), AuthError> {
        self.users.set_not_before(user_id, now).await?;
        self.bus
            .publish(
                Invalidation::UserNotBefore {
                    user: user_id,
                    at: now,
                },
                now,
            )
            .await?;
        // Tokens issued within this same second pass the not-before check;
        // their sessions' revocations catch them.
        for sid in self.sessions.revoke_user(user_id, None, now).await? {
            self.bus
                .publish(Invalidation::SessionRevoked { sid }, now)
                .await?;
        }
        tracing::info!(%user_id, "logout from every session");
        Ok(())
    }

    pub async fn list(&self, user_id: Uuid, now: UnixTime) -> Result<Vec<Session>, AuthError> {
        Ok(self.sessions.list_for_user(user_id, now).await?)
    }

    /// Deletes one of the user's own sessions; anybody else's is NOTFOUND.
    pub async fn delete(&self, user_id: Uuid, sid: Uuid, now: UnixTime) -> Result<(), AuthError> {
        match self.sessions.get(sid).await? {
            Some(session) if session.user_id == user_id && session.is_live(now) => {
                self.revoke_one(sid, now).await
            }
            _ => Err(AuthError::NotFound),
        }
    }

    /// With no store able to hold the revocation (both down), it still
    /// takes effect on this node — the in-memory set and the validation
    /// cache, through the bus, whose log row and the session store's
    /// deferred write carry it to the others later — but the answer is 503:
    /// it is acknowledged only once a store holds it (DESIGN.md §4).
    async fn revoke_one(&self, sid: Uuid, now: UnixTime) -> Result<(), AuthError> {
        let stored = self.sessions.revoke(sid, now).await;
        if matches!(&stored, Err(e) if !e.is_unavailable()) {
            return Ok(stored?);
        }
        let published = self
            .bus
            .publish(Invalidation::SessionRevoked { sid }, now)
            .await;
        stored?;
        Ok(published?)
    }

    fn pair(
        &self,
        user: &User,
        session: &Session,
        secret: &str,
        now: UnixTime,
    ) -> Result<TokenPair, AuthError> {
        self.pair_for(user.id, &user.roles, session, secret, now)
    }

    fn pair_for(
        &self,
        sub: Uuid,
        roles: &[String],
        session: &Session,
        secret: &str,
        now: UnixTime,
    ) -> Result<TokenPair, AuthError> {
        Ok(TokenPair {
            access_token: self.tokens.issue_for(sub, roles, session.id, now)?,
            expires_in: self.tokens.access_ttl(),
            refresh_token: format!("{}.{secret}", session.id),
            refresh_expires_in: session.expires_at - now,
            session_id: session.id,
        })
    }
}

/// 256 random bits, and the hex SHA-256 that is all the store keeps.
fn new_refresh_secret() -> Result<(String, String), AuthError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| AuthError::internal("rng failed"))?;
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    let hash = crate::auth::sha256_hex(&secret);
    Ok((secret, hash))
}

/// `<session id>.<secret>` → (session id, hash of the secret).
pub(crate) fn parse_refresh_token(token: &str) -> Result<(Uuid, String), AuthError> {
    let (sid, secret) = token
        .trim()
        .split_once('.')
        .ok_or(AuthError::TokenInvalid)?;
    let sid = Uuid::parse_str(sid).map_err(|_| AuthError::TokenInvalid)?;
    if secret.len() != 43
        || !secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(AuthError::TokenInvalid);
    }
    Ok((sid, crate::auth::sha256_hex(secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_carry_256_bits_and_parse_back() {
        let (secret, hash) = new_refresh_secret().expect("secret");
        assert_eq!(URL_SAFE_NO_PAD.decode(&secret).expect("b64").len(), 32);
        let sid = Uuid::new_v4();
        let (parsed, parsed_hash) = parse_refresh_token(&format!("{sid}.{secret}")).expect("parse");
        assert_eq!((parsed, parsed_hash), (sid, hash));
        assert!(parse_refresh_token("nonsense").is_err());
        assert!(parse_refresh_token(&format!("{sid}.short")).is_err());
    }
}
