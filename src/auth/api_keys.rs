//! API keys: `hf_<prefix>_<secret>`. The 12-hex-digit prefix finds the row
//! (and lets an operator recognise a key in a log); the 256-bit secret
//! proves it. Only the SHA-256 of the whole key is stored: a fast hash is
//! right for a high-entropy secret, and it keeps lookups cheap.
//!
//! A successful lookup is cached for `[cache] api_key_ttl`, so keys in use
//! keep working through a database outage; failures are never cached, but
//! they are limited per client address on each node (a random well-formed
//! key costs a database query): past `rate_limit.api_key_failures_per_ip`
//! an address's lookups are refused (429) without one. A
//! key's scopes are re-checked against its owner's current permissions on
//! every lookup, so a key never outlives the privileges it was minted with.

use crate::auth::audit::Audit;
use crate::auth::error::{AuthError, FieldError};
use crate::auth::rate_limit::RateLimits;
use crate::auth::rbac::{Rbac, permits};
use crate::cache::bus::{Bus, Invalidation, Subscriber};
use crate::cache::{CacheView, CountedCache};
use crate::store::{ApiKey, ApiKeyStore, UnixTime, UserStatus};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Every scope, and the permission its holder must have to mint it.
pub const SCOPES: &[(&str, Option<&str>)] = &[
    ("users", None),
    ("introspect", Some("tokens:introspect")),
    ("authz", Some("authz:check")),
    ("admin", Some("admin:*")),
];

const CACHE_CAPACITY: u64 = 50_000;
const PREFIX_LEN: usize = 12;
const SECRET_LEN: usize = 64;

/// A caller proven by an API key.
#[derive(Debug, Clone)]
pub struct ApiKeyPrincipal {
    pub id: Uuid,
    pub user_id: Uuid,
    pub prefix: String,
    /// The stored scopes the owner still holds.
    pub scopes: Vec<String>,
    pub expires_at: Option<UnixTime>,
}

impl ApiKeyPrincipal {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// A key just created: the only time `key` exists outside the caller.
pub struct CreatedKey {
    pub key: String,
    pub stored: ApiKey,
}

pub struct ApiKeys {
    store: Arc<dyn ApiKeyStore>,
    rbac: Arc<Rbac>,
    cache: CountedCache<[u8; 32], Arc<ApiKeyPrincipal>>,
    ttl: Duration,
    bus: Arc<Bus>,
    audit: Arc<Audit>,
    limits: Arc<RateLimits>,
}

fn random_hex(bytes: usize) -> Result<String, AuthError> {
    let mut buf = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut buf).map_err(|_| AuthError::internal("rng failed"))?;
    Ok(hex::encode(buf))
}

/// `hf_<prefix>_<secret>` → prefix, or `None` when it cannot be a key.
pub(crate) fn parse(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("hf_")?;
    let (prefix, secret) = rest.split_once('_')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(prefix, PREFIX_LEN) && hex(secret, SECRET_LEN)).then_some(prefix)
}

impl ApiKeys {
    pub fn new(
        store: Arc<dyn ApiKeyStore>,
        rbac: Arc<Rbac>,
        ttl: Duration,
        bus: Arc<Bus>,
        audit: Arc<Audit>,
        limits: Arc<RateLimits>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            rbac,
            cache: CountedCache::new("api_keys", CACHE_CAPACITY),
            ttl,
            bus,
            audit,
            limits,
        })
    }

    pub fn view(&self) -> &dyn CacheView {
        &self.cache
    }

    /// Mints a key for `user_id`. Every scope must be known and within the
    /// user's current permissions.
    pub async fn create(
        &self,
        user_id: Uuid,
        name: &str,
        scopes: &[String],
        expires_in: Option<i64>,
        now: UnixTime,
    ) -> Result<CreatedKey, AuthError> {
        let mut errors = Vec::new();
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            errors.push(FieldError::new("name", "must be 1 to 100 characters"));
        }
        if scopes.is_empty() {
            errors.push(FieldError::new("scopes", "at least one scope is required"));
        }
        for scope in scopes {
            if !SCOPES.iter().any(|(s, _)| s == scope) {
                errors.push(FieldError::new(
                    "scopes",
                    format!("unknown scope `{scope}`; known: users, introspect, authz, admin"),
                ));
            }
        }
        if let Some(secs) = expires_in
            && !(60..=10 * 365 * 24 * 3600).contains(&secs)
        {
            errors.push(FieldError::new(
                "expires_in",
                "must be between 60 seconds and 10 years",
            ));
        }
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        let permissions = self.rbac.live_permissions(user_id).await?;
        if let Some(scope) = scopes.iter().find(|s| !scope_allowed(s, &permissions)) {
            return Err(AuthError::ForbiddenBecause(format!(
                "scope `{scope}` needs a permission you do not hold"
            )));
        }
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        let prefix = random_hex(PREFIX_LEN / 2)?;
        let key = format!("hf_{prefix}_{}", random_hex(SECRET_LEN / 2)?);
        let stored = ApiKey {
            id: Uuid::new_v4(),
            user_id,
            name: name.to_string(),
            prefix,
            secret_hash: crate::auth::sha256_hex(&key),
            scopes,
            created_at: now,
            expires_at: expires_in.map(|s| now + s),
            revoked_at: None,
        };
        self.store.create_api_key(&stored).await?;
        self.audit.record(
            "api_key_created",
            Some(user_id),
            serde_json::json!({"key_id": stored.id, "prefix": stored.prefix, "scopes": stored.scopes}),
        ).await?;
        Ok(CreatedKey { key, stored })
    }

    pub async fn list(&self, user_id: Uuid) -> Result<Vec<ApiKey>, AuthError> {
        Ok(self.store.api_keys_of(user_id).await?)
    }

    /// Revokes one of the user's keys; it stops working here at once and on
    /// other nodes through the bus.
    pub async fn delete(&self, user_id: Uuid, id: Uuid, now: UnixTime) -> Result<(), AuthError> {
        let key = self
            .store
            .revoke_api_key(user_id, id, now)
            .await?
            .ok_or(AuthError::NotFound)?;
        self.bus
            .publish(Invalidation::ApiKeyRevoked { id }, now)
            .await?;
        self.audit
            .record(
                "api_key_deleted",
                Some(user_id),
                serde_json::json!({"key_id": id, "prefix": key.prefix}),
            )
            .await?;
        Ok(())
    }

    /// The principal behind `key`: from the cache, or the database (503
    /// SVC001 when it cannot answer and the key is not cached). `address`
    /// is the client's: its failed lookups are limited on this node, and
    /// past the limit its keys are refused (429) before the database is
    /// asked. A cached key proves itself without a lookup and is answered.
    pub async fn authenticate(
        &self,
        key: &str,
        address: &str,
        now: UnixTime,
    ) -> Result<Arc<ApiKeyPrincipal>, AuthError> {
        let key = key.trim();
        let prefix = parse(key).ok_or(AuthError::TokenInvalid)?;
        let digest = crate::auth::sha256(key);
        if let Some(hit) = self.cache.get(&digest) {
            if hit.expires_at.is_some_and(|at| at <= now) {
                return Err(AuthError::TokenExpired);
            }
            return Ok(hit);
        }
        // Reserved before the lookup, so concurrent guesses cannot pass
        // the limit; given back (on drop) unless no key matched.
        let attempt = self.limits.api_key_attempt(address)?;
        let Some((stored, status)) = self.store.api_key_by_prefix(prefix).await? else {
            attempt.failed();
            return Err(AuthError::TokenInvalid);
        };
        let presented = hex::encode(digest);
        if aws_lc_rs::constant_time::verify_slices_are_equal(
            presented.as_bytes(),
            stored.secret_hash.as_bytes(),
        )
        .is_err()
        {
            attempt.failed();
            return Err(AuthError::TokenInvalid);
        }
        drop(attempt);
        if stored.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if stored.expires_at.is_some_and(|at| at <= now) {
            return Err(AuthError::TokenExpired);
        }
        if status == UserStatus::Disabled {
            return Err(AuthError::AccountDisabled);
        }
        let permissions = self.rbac.live_permissions(stored.user_id).await?;
        let principal = Arc::new(ApiKeyPrincipal {
            id: stored.id,
            user_id: stored.user_id,
            prefix: stored.prefix,
            scopes: stored
                .scopes
                .into_iter()
                .filter(|s| scope_allowed(s, &permissions))
                .collect(),
            expires_at: stored.expires_at,
        });
        let ttl = match principal.expires_at {
            Some(at) => self.ttl.min(Duration::from_secs((at - now).max(0) as u64)),
            None => self.ttl,
        };
        self.cache.insert(digest, Arc::clone(&principal), ttl);
        Ok(principal)
    }
}

fn scope_allowed(scope: &str, permissions: &[String]) -> bool {
    match SCOPES.iter().find(|(s, _)| *s == scope) {
        Some((_, None)) => true,
        Some((_, Some(needed))) => permits(permissions, needed),
        None => false,
    }
}

impl Subscriber for ApiKeys {
    fn apply(&self, event: &Invalidation, _: UnixTime) {
        match *event {
            Invalidation::ApiKeyRevoked { id } => self.cache.invalidate_if(move |_, p| p.id == id),
            Invalidation::UserDisabled { user, .. }
            | Invalidation::UserRolesChanged { user, .. } => {
                self.cache.invalidate_if(move |_, p| p.user_id == user)
            }
            Invalidation::RolesChanged => self.cache.invalidate_all(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_keys_parse() {
        let key = format!("hf_{}_{}", "a1".repeat(6), "0f".repeat(32));
        assert_eq!(parse(&key), Some("a1a1a1a1a1a1"));
        assert_eq!(parse("hf_short_x"), None);
        assert_eq!(parse(&key.replace("hf_", "xx_")), None);
        assert_eq!(parse(&format!("{key}0")), None);
    }

    #[test]
    fn scopes_follow_permissions() {
        let admin = vec!["*".to_string()];
        let reader = vec!["tokens:introspect".to_string()];
        assert!(scope_allowed("admin", &admin));
        assert!(scope_allowed("users", &[]));
        assert!(scope_allowed("introspect", &reader));
        assert!(!scope_allowed("admin", &reader));
        assert!(!scope_allowed("authz", &reader));
        assert!(!scope_allowed("root", &admin));
    }
}
