//! Models and traits for what grants access beyond sessions: API keys and
//! roles. Only the SQL store implements them; each is a separate trait so
//! the domain asks for exactly the capability it uses.

use crate::store::{StoreError, UnixTime, UserStatus};
use async_trait::async_trait;
use uuid::Uuid;

/// An API key as stored: the prefix finds it, only the SHA-256 (hex) of
/// the whole key proves it.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub secret_hash: String,
    pub scopes: Vec<String>,
    pub created_at: UnixTime,
    pub expires_at: Option<UnixTime>,
    pub revoked_at: Option<UnixTime>,
}

#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    async fn create_api_key(&self, key: &ApiKey) -> Result<(), StoreError>;
    /// The key with this prefix (revoked or not) and its owner's status.
    async fn api_key_by_prefix(
        &self,
        prefix: &str,
    ) -> Result<Option<(ApiKey, UserStatus)>, StoreError>;
    /// The user's keys that are not revoked, newest first.
    async fn api_keys_of(&self, user_id: Uuid) -> Result<Vec<ApiKey>, StoreError>;
    /// Revokes one of the user's live keys; `None` when there is none.
    async fn revoke_api_key(
        &self,
        user_id: Uuid,
        id: Uuid,
        now: UnixTime,
    ) -> Result<Option<ApiKey>, StoreError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub permissions: Vec<String>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

#[async_trait]
pub trait RoleStore: Send + Sync {
    async fn roles(&self) -> Result<Vec<Role>, StoreError>;
    /// Creates the role or replaces its permissions.
    async fn put_role(&self, role: &Role) -> Result<(), StoreError>;
    /// Deletes the role and takes it from every user, in one transaction;
    /// false when there was no such role.
    /// `at_ms` is recorded as its holders' `roles_changed_at`.
    async fn delete_role(&self, name: &str, at_ms: i64) -> Result<bool, StoreError>;
    /// Replaces the user's roles; false when there is no such user.
    /// `at_ms` is recorded as the user's `roles_changed_at`.
    async fn set_user_roles(
        &self,
        user_id: Uuid,
        roles: &[String],
        now: UnixTime,
        at_ms: i64,
    ) -> Result<bool, StoreError>;
    /// The user's status and the union of their roles' permissions; `None`
    /// when there is no such user.
    async fn permissions_of(
        &self,
        user_id: Uuid,
    ) -> Result<Option<(UserStatus, Vec<String>)>, StoreError>;
}
