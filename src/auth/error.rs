//! `AuthError`: what the domain says went wrong, in its own words. It names
//! durations and dependencies, never status codes or headers: the HTTP
//! edge (`http::error`) maps it to the contract's codes in one place, the
//! CLI prints it.

use crate::store::StoreError;
use serde::Serialize;
use std::time::Duration;

/// How long a caller should wait after a store reported itself unavailable
/// without saying for how long (a timeout, a refused connection).
const STORE_RETRY: Duration = Duration::from_secs(5);

/// One field that failed validation, listed in `details.fields`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("token expired")]
    TokenExpired,
    #[error("token invalid")]
    TokenInvalid,
    #[error("token or session revoked")]
    Revoked,
    #[error("not permitted")]
    Forbidden,
    /// Not permitted, and the caller is told why.
    #[error("not permitted: {0}")]
    ForbiddenBecause(String),
    #[error("account disabled")]
    AccountDisabled,
    /// A refresh token used twice: its session is revoked.
    #[error("refresh token reuse detected")]
    RefreshReuse,
    /// The named field (`email`, `username`...) is already taken.
    #[error("{0} already taken")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    /// Over `limit`; the window has room again after `retry_after`.
    #[error("rate limited")]
    RateLimited { limit: u32, retry_after: Duration },
    /// A dependency cannot answer now; worth asking again after
    /// `retry_after`.
    #[error("dependency {dependency} unavailable")]
    Unavailable {
        dependency: String,
        retry_after: Duration,
    },
    /// The primary database is down: reads work, writes do not.
    #[error("read-only mode")]
    ReadOnly,
    /// A bug or a broken invariant; the detail is logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AuthError {
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }

    /// `dependency` cannot answer; ask again after `retry_after`.
    pub fn unavailable(dependency: impl Into<String>, retry_after: Duration) -> Self {
        Self::Unavailable {
            dependency: dependency.into(),
            retry_after,
        }
    }
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable { dependency, .. } => {
                AuthError::unavailable(dependency, STORE_RETRY)
            }
            StoreError::CircuitOpen {
                dependency,
                retry_after,
            } => AuthError::unavailable(dependency, retry_after),
            StoreError::ReadOnly => AuthError::ReadOnly,
            StoreError::Conflict(field) => AuthError::Conflict(field.to_string()),
            StoreError::Superseded => AuthError::Revoked,
            StoreError::Corrupt(detail) => AuthError::Internal(detail),
        }
    }
}

impl From<HashError> for AuthError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Overloaded => {
                AuthError::unavailable("password_hasher", Duration::from_secs(1))
            }
            HashError::Failed(detail) => AuthError::Internal(detail),
        }
    }
}

impl From<KeyError> for AuthError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Store(e) => e.into(),
            other => AuthError::internal(other),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("signing key {kid} cannot be opened with this master key (wrong master key?)")]
    WrongMasterKey { kid: String },
    #[error("key generation failed")]
    Generation,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The password hasher's failures (`auth::passwords`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashError {
    #[error("password hashing queue is full")]
    Overloaded,
    #[error("password hashing failed: {0}")]
    Failed(String),
}
