//! Accounts: registration, profile, password change, soft delete. Every
//! change that must end existing tokens also updates the in-memory
//! revocation set, so it takes effect at once without a database read on
//! the verification path.

use crate::auth::passwords::PasswordHasher;
use crate::auth::policy::{PasswordPolicy, check_email, check_username};
use crate::auth::revocation::RevocationSet;
use crate::error::{ApiError, FieldError};
use crate::store::{SessionStore, UnixTime, User, UserStatus, UserStore};
use std::sync::Arc;
use uuid::Uuid;

pub struct Registration {
    pub email: String,
    pub username: String,
    pub password: String,
    pub roles: Vec<String>,
}

pub struct Accounts {
    users: Arc<dyn UserStore>,
    sessions: Arc<dyn SessionStore>,
    hasher: Arc<PasswordHasher>,
    policy: Arc<PasswordPolicy>,
    revocations: Arc<RevocationSet>,
}

impl Accounts {
    pub fn new(
        users: Arc<dyn UserStore>,
        sessions: Arc<dyn SessionStore>,
        hasher: Arc<PasswordHasher>,
        policy: Arc<PasswordPolicy>,
        revocations: Arc<RevocationSet>,
    ) -> Self {
        Self {
            users,
            sessions,
            hasher,
            policy,
            revocations,
        }
    }

    pub async fn register(&self, r: Registration, now: UnixTime) -> Result<User, ApiError> {
        let email = r.email.trim().to_lowercase();
        let username = r.username.trim().to_string();
        let mut errors: Vec<FieldError> = Vec::new();
        errors.extend(check_email(&email));
        errors.extend(check_username(&username));
        errors.extend(
            self.policy
                .check("password", &r.password, &[&email, &username]),
        );
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
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
            created_at: now,
            updated_at: now,
        };
        self.users.create(&user).await?;
        tracing::info!(user_id = %user.id, "user registered");
        Ok(user)
    }

    /// The user behind a verified token; a disabled account is refused.
    pub async fn current(&self, id: Uuid) -> Result<User, ApiError> {
        let user = self.users.by_id(id).await?.ok_or(ApiError::Revoked)?;
        if user.status == UserStatus::Disabled {
            return Err(ApiError::AccountDisabled);
        }
        Ok(user)
    }

    pub async fn update_profile(
        &self,
        id: Uuid,
        email: Option<String>,
        username: Option<String>,
        now: UnixTime,
    ) -> Result<User, ApiError> {
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
            return Err(ApiError::Validation(errors));
        }
        self.current(id).await?;
        self.users
            .update_profile(id, email.as_deref(), username.as_deref(), now)
            .await?;
        self.current(id).await
    }

    /// Checks the current password, stores the new one and revokes every
    /// other session of the user; `keep` is the caller's own session.
    pub async fn change_password(
        &self,
        id: Uuid,
        keep: Uuid,
        current_password: String,
        new_password: String,
        now: UnixTime,
    ) -> Result<(), ApiError> {
        let user = self.current(id).await?;
        if !self
            .hasher
            .verify(current_password, Some(user.password_hash.clone()))
            .await?
        {
            tracing::warn!(user_id = %id, "password change refused: wrong current password");
            return Err(ApiError::InvalidCredentials);
        }
        if let Some(error) = self.policy.check(
            "new_password",
            &new_password,
            &[&user.email, &user.username],
        ) {
            return Err(ApiError::Validation(vec![error]));
        }
        let hash = self.hasher.hash(new_password).await?;
        self.users.set_password(id, &hash, now).await?;
        for sid in self.sessions.revoke_user(id, Some(keep), now).await? {
            self.revocations.revoke_session(sid, now);
        }
        tracing::info!(user_id = %id, "password changed; other sessions revoked");
        Ok(())
    }

    /// Soft delete: the account is disabled and every token and session of
    /// it stops working at once.
    pub async fn disable(&self, id: Uuid, now: UnixTime) -> Result<(), ApiError> {
        self.users.disable(id, now).await?;
        self.revocations.set_user_not_before(id, now);
        for sid in self.sessions.revoke_user(id, None, now).await? {
            self.revocations.revoke_session(sid, now);
        }
        tracing::warn!(user_id = %id, "account disabled");
        Ok(())
    }
}
