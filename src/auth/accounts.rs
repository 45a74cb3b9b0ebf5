//! Accounts: registration, profile, password change, soft delete. Every
//! change that must end existing tokens also updates the in-memory
//! revocation set, so it takes effect at once without a database read on
//! the verification path.

use crate::auth::audit::Audit;
use crate::auth::error::{AuthError, FieldError};
use crate::auth::passwords::PasswordHasher;
use crate::auth::policy::{PasswordPolicy, check_email, check_username};
use crate::auth::rate_limit::RateLimits;
use crate::cache::bus::{Bus, Invalidation};
use crate::store::{SessionStore, UnixTime, User, UserStatus, UserStore};
use std::sync::Arc;
use uuid::Uuid;

pub struct Registration {
    pub email: String,
    pub username: String,
    pub password: String,
    pub roles: Vec<String>,
}

/// The checks a registration passes before any store is touched: every
/// field's problem at once. Returns the email and username as stored
/// (trimmed; the email lower-cased).
pub fn check_registration(
    policy: &PasswordPolicy,
    r: &Registration,
) -> Result<(String, String), AuthError> {
    let email = r.email.trim().to_lowercase();
    let username = r.username.trim().to_string();
    let mut errors: Vec<FieldError> = Vec::new();
    errors.extend(check_email(&email));
    errors.extend(check_username(&username));
    errors.extend(policy.check("password", &r.password, &[&email, &username]));
    if !errors.is_empty() {
        return Err(AuthError::Validation(errors));
    }
    Ok((email, username))
}

pub struct Accounts {
    users: Arc<dyn UserStore>,
    sessions: Arc<dyn SessionStore>,
    hasher: Arc<PasswordHasher>,
    policy: Arc<PasswordPolicy>,
    bus: Arc<Bus>,
    audit: Arc<Audit>,
    limits: Arc<RateLimits>,
}

impl Accounts {
    pub fn new(
        users: Arc<dyn UserStore>,
        sessions: Arc<dyn SessionStore>,
        hasher: Arc<PasswordHasher>,
        policy: Arc<PasswordPolicy>,
        bus: Arc<Bus>,
        audit: Arc<Audit>,
        limits: Arc<RateLimits>,
    ) -> Self {
        Self {
            users,
            sessions,
            hasher,
            policy,
            bus,
            audit,
            limits,
        }
    }

    pub async fn register(&self, r: Registration, now: UnixTime) -> Result<User, AuthError> {
        let (email, username) = check_registration(&self.policy, &r)?;
        // Before the hash: a taken name is answered without Argon2 work, and
        // a database that cannot answer fails fast (its breaker) instead of
        // after a hash that a loaded machine may take long to give.
        for (field, taken) in [("email", &email), ("username", &username)] {
            if self.users.by_login(taken).await?.is_some() {
                return Err(AuthError::Conflict(field.to_string()));
            }
        }
        let password_hash = self.hasher.hash(r.password).await?;
        let user = User {
            id: Uuid::new_v4(),
            email,
            username,
            password_hash,
            status: UserStatus::Active,
            roles: r.roles,
            not_before: None,
            security_version: 0,
            created_at: now,
            updated_at: now,
        };
        self.users.create(&user).await?;
        tracing::info!(user_id = %user.id, "user registered");
        Ok(user)
    }

    /// The user behind a verified token; a disabled account is refused.
    pub async fn current(&self, id: Uuid) -> Result<User, AuthError> {
        let user = self.users.by_id(id).await?.ok_or(AuthError::Revoked)?;
        if user.status == UserStatus::Disabled {
            return Err(AuthError::AccountDisabled);
        }
        Ok(user)
    }

    pub async fn update_profile(
        &self,
        id: Uuid,
        email: Option<String>,
        username: Option<String>,
        now: UnixTime,
    ) -> Result<User, AuthError> {
        let email = email.map(|e| e.trim().to_lowercase());
        let username = username.map(|u| u.trim().to_string());
        let mut errors: Vec<FieldError> = Vec::new();
        if let Some(email) = &email {
            errors.extend(check_email(email));
        }
        if let Some(username) = &username {
            errors.extend(check_username(username));
        }
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        self.current(id).await?;
        self.users
            .update_profile(id, email.as_deref(), username.as_deref(), now)
            .await?;
        self.current(id).await
    }

    /// Checks the current password, stores the new one and revokes every
    /// other session of the user; `keep` is the caller's own session.
    ///
    /// The check is a password guess like a login's, so it is limited like
    /// one (DESIGN.md §3): reserved on the same (account, address) pair
    /// and account ceiling before it runs, counted and audited when wrong,
    /// refused with 429 while the pair is locked — the right password too.
    pub async fn change_password(
        &self,
        id: Uuid,
        keep: Uuid,
        address: &str,
        current_password: String,
        new_password: String,
        now: UnixTime,
    ) -> Result<(), AuthError> {
        let user = self.current(id).await?;
        // Shed at the door, like a login: no limiter call without a place
        // in the hash queue.
        let slot = self.hasher.reserve()?;
        let attempt = self
            .limits
            .reserve_account(&id.to_string(), address)
            .await?;
        let matched = match slot
            .verify(current_password, Some(user.password_hash.clone()))
            .await
        {
            Ok(matched) => matched,
            Err(e) => {
                self.limits.account_undecided(attempt).await;
                return Err(e.into());
            }
        };
        if !matched {
            tracing::warn!(user_id = %id, "password change refused: wrong current password");
            if let Some(lock) = self.limits.account_failed(attempt).await {
                self.audit
                    .record(
                        "account_locked",
                        Some(id),
                        serde_json::json!({"ip": address, "lock_secs": lock.as_secs()}),
                    )
                    .await?;
            }
            self.audit
                .record(
                    "password_change_failed",
                    Some(id),
                    serde_json::json!({"ip": address}),
                )
                .await?;
            return Err(AuthError::InvalidCredentials);
        }
        self.limits.account_succeeded(attempt).await;
        if let Some(error) = self.policy.check(
            "new_password",
            &new_password,
            &[&user.email, &user.username],
        ) {
            return Err(AuthError::Validation(vec![error]));
        }
        let hash = self.hasher.hash(new_password).await?;
        self.users.set_password(id, &hash, now).await?;
        let revoked = self.sessions.revoke_user(id, Some(keep), now).await?;
        for &sid in &revoked {
            self.bus
                .publish(Invalidation::SessionRevoked { sid }, now)
                .await?;
        }
        self.audit
            .record(
                "password_changed",
                Some(id),
                serde_json::json!({"sessions_revoked": revoked.len()}),
            )
            .await?;
        Ok(())
    }

    /// Soft delete: the account is disabled and every token and session of
    /// it stops working at once.
    /// `actor` is who did it: the user themself or an admin.
    pub async fn disable(&self, id: Uuid, actor: &str, now: UnixTime) -> Result<(), AuthError> {
        if self.users.by_id(id).await?.is_none() {
            return Err(AuthError::NotFound);
        }
        self.users.disable(id, now).await?;
        // The not-before time ends every token of the user on every node;
        // the sessions are revoked so no refresh brings one back.
        self.bus
            .publish(Invalidation::UserDisabled { user: id, at: now }, now)
            .await?;
        // Tokens issued within this same second pass a not-before check;
        // their sessions' revocations catch them.
        for sid in self.sessions.revoke_user(id, None, now).await? {
            self.bus
                .publish(Invalidation::SessionRevoked { sid }, now)
                .await?;
        }
        self.audit
            .record("user_disabled", Some(id), serde_json::json!({"by": actor}))
            .await?;
        Ok(())
    }

    /// An admin undoes a deactivation: new logins work again, while every
    /// token and session from before it stays dead (their not-before time
    /// and revocations are kept).
    pub async fn enable(&self, id: Uuid, actor: &str, now: UnixTime) -> Result<(), AuthError> {
        if self.users.by_id(id).await?.is_none() {
            return Err(AuthError::NotFound);
        }
        self.users.enable(id, now).await?;
        self.audit
            .record("user_enabled", Some(id), serde_json::json!({"by": actor}))
            .await?;
        Ok(())
    }

    /// NOTFOUND unless the user exists: for operations on a user by id that
    /// do not otherwise read the account (an admin's logout-all).
    pub async fn ensure_exists(&self, id: Uuid) -> Result<(), AuthError> {
        match self.users.by_id(id).await? {
            Some(_) => Ok(()),
            None => Err(AuthError::NotFound),
        }
    }

    /// How many users there are: `serve` offers to create the first admin.
    pub async fn count(&self) -> Result<i64, AuthError> {
        Ok(self.users.count().await?)
    }

    /// Users whose email or username contains `query`. A query longer than
    /// any email can match nobody, and is answered without asking the
    /// store (SQLite refuses LIKE patterns past 50,000 bytes as an error).
    pub async fn search(&self, query: &str, limit: i64) -> Result<Vec<User>, AuthError> {
        let query = query.trim();
        if query.len() > crate::auth::policy::MAX_EMAIL_BYTES {
            return Ok(Vec::new());
        }
        Ok(self.users.search(query, limit).await?)
    }
}
