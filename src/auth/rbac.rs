//! Role-based access control. A role holds `resource:action` permissions
//! where either half may be `*` (and `*` alone is everything); the built-in
//! role `admin` holds `*` and cannot be changed.
//!
//! `check` answers from a per-(user, permission) decision cache: fresh for
//! `[cache] authz_ttl`; past that the database is asked, and if it cannot
//! answer, a decision up to `authz_max_stale` old is served marked stale.
//! With no decision cached and no database, the answer is 503 — never a
//! guess.
//!
//! A decision's age is measured on tokio's clock (read after the database
//! answered or failed, never before), so the TTL rules are tested on
//! paused time.

use crate::auth::audit::Audit;
use crate::auth::error::{AuthError, FieldError};
use crate::cache::bus::{Bus, Invalidation, Subscriber};
use crate::cache::{CacheView, CountedCache};
use crate::store::{Role, RoleStore, UnixTime, UserStatus};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

pub const ADMIN_ROLE: &str = "admin";
const CACHE_CAPACITY: u64 = 100_000;

/// Does `pattern` grant `wanted`?
fn grants(pattern: &str, wanted: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match (pattern.split_once(':'), wanted.split_once(':')) {
        (Some((pr, pa)), Some((wr, wa))) => (pr == "*" || pr == wr) && (pa == "*" || pa == wa),
        _ => false,
    }
}

/// Does any of `permissions` grant `wanted`?
pub fn permits(permissions: &[String], wanted: &str) -> bool {
    permissions.iter().any(|p| grants(p, wanted))
}

/// `*`, or `resource:action` where each half is `*` or lower-case letters,
/// digits, `_`, `-`, `.`.
fn valid_permission(p: &str) -> bool {
    let part = |s: &str| {
        s == "*"
            || (!s.is_empty()
                && s.len() <= 64
                && s.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
                }))
    };
    p == "*" || p.split_once(':').is_some_and(|(r, a)| part(r) && part(a))
}

fn valid_role_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Live,
    Cache,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Live => "live",
            Source::Cache => "cache",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthzAnswer {
    pub allowed: bool,
    pub source: Source,
    pub stale: bool,
}

#[derive(Clone, Copy)]
struct CachedDecision {
    allowed: bool,
    decided: Instant,
}

impl CachedDecision {
    /// Its age at `now`, where `now` was read after it was made.
    fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.decided)
    }
}

pub struct Rbac {
    roles: Arc<dyn RoleStore>,
    decisions: CountedCache<(Uuid, String), CachedDecision>,
    ttl: Duration,
    max_stale: Duration,
    bus: Arc<Bus>,
    audit: Arc<Audit>,
}

impl Rbac {
    pub fn new(
        roles: Arc<dyn RoleStore>,
        ttl: Duration,
        max_stale: Duration,
        bus: Arc<Bus>,
        audit: Arc<Audit>,
    ) -> Arc<Self> {
        Arc::new(Self {
            roles,
            decisions: CountedCache::new("authz", CACHE_CAPACITY),
            ttl,
            max_stale,
            bus,
            audit,
        })
    }

    pub fn view(&self) -> &dyn CacheView {
        &self.decisions
    }

    /// The permissions an active user holds now (database); a disabled user
    /// holds none. NOTFOUND for no such user.
    pub async fn live_permissions(&self, user_id: Uuid) -> Result<Vec<String>, AuthError> {
        match self.roles.permissions_of(user_id).await? {
            None => Err(AuthError::NotFound),
            Some((UserStatus::Disabled, _)) => Ok(Vec::new()),
            Some((UserStatus::Active, permissions)) => Ok(permissions),
        }
    }

    pub async fn check(&self, user_id: Uuid, permission: &str) -> Result<AuthzAnswer, AuthError> {
        if !valid_permission(permission) || permission == "*" {
            return Err(AuthError::Validation(vec![FieldError::new(
                "permission",
                "must be resource:action",
            )]));
        }
        let key = (user_id, permission.to_string());
        let cached = self.decisions.get(&key);
        let now = Instant::now();
        if let Some(d) = cached
            && d.age(now) < self.ttl
        {
            return Ok(AuthzAnswer {
                allowed: d.allowed,
                source: Source::Cache,
                stale: false,
            });
        }
        match self.live_permissions(user_id).await {
            Ok(permissions) => {
                let allowed = permits(&permissions, permission);
                let decision = CachedDecision {
                    allowed,
                    decided: Instant::now(),
                };
                self.decisions
                    .insert(key, decision, self.ttl + self.max_stale);
                Ok(AuthzAnswer {
                    allowed,
                    source: Source::Live,
                    stale: false,
                })
            }
            Err(e @ (AuthError::Unavailable { .. } | AuthError::ReadOnly)) => {
                let within_stale =
                    cached.filter(|d| d.age(Instant::now()) < self.ttl + self.max_stale);
                let Some(d) = within_stale else {
                    return Err(e);
                };
                metrics::counter!("holdfast_authz_stale_total").increment(1);
                Ok(AuthzAnswer {
                    allowed: d.allowed,
                    source: Source::Cache,
                    stale: true,
                })
            }
            Err(e) => Err(e),
        }
    }

    pub async fn roles(&self) -> Result<Vec<Role>, AuthError> {
        Ok(self.roles.roles().await?)
    }

    /// Creates or replaces a role.
    pub async fn put_role(
        &self,
        name: &str,
        permissions: Vec<String>,
        now: UnixTime,
    ) -> Result<Role, AuthError> {
        let mut errors = Vec::new();
        if !valid_role_name(name) {
            errors.push(FieldError::new(
                "name",
                "lower-case letters, digits, _ - . (at most 64)",
            ));
        } else if name == ADMIN_ROLE {
            errors.push(FieldError::new(
                "name",
                "the built-in admin role cannot be changed",
            ));
        }
        for p in &permissions {
            if !valid_permission(p) {
                errors.push(FieldError::new(
                    "permissions",
                    format!("`{p}` is not resource:action (either may be *)"),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        let mut permissions = permissions;
        permissions.sort();
        permissions.dedup();
        let role = Role {
            name: name.to_string(),
            permissions,
            created_at: now,
            updated_at: now,
        };
        self.roles.put_role(&role).await?;
        self.bus.publish(Invalidation::RolesChanged, now).await?;
        self.audit
            .record(
                "role_changed",
                None,
                serde_json::json!({"role": role.name, "permissions": role.permissions}),
            )
            .await?;
        Ok(role)
    }

    pub async fn delete_role(&self, name: &str, now: UnixTime) -> Result<(), AuthError> {
        if name == ADMIN_ROLE {
            return Err(AuthError::Validation(vec![FieldError::new(
                "name",
                "the built-in admin role cannot be deleted",
            )]));
        }
        let at_ms = crate::auth::now_ms();
        if !self.roles.delete_role(name, at_ms).await? {
            return Err(AuthError::NotFound);
        }
        self.bus.publish(Invalidation::RolesChanged, now).await?;
        self.bus
            .publish(
                Invalidation::RoleDeleted {
                    name: name.to_string(),
                    at_ms,
                },
                now,
            )
            .await?;
        self.audit
            .record(
                "role_changed",
                None,
                serde_json::json!({"role": name, "deleted": true}),
            )
            .await?;
        Ok(())
    }

    /// Replaces a user's roles; every role must exist.
    pub async fn set_user_roles(
        &self,
        user_id: Uuid,
        roles: Vec<String>,
        now: UnixTime,
    ) -> Result<Vec<String>, AuthError> {
        let known = self.roles.roles().await?;
        let unknown: Vec<FieldError> = roles
            .iter()
            .filter(|r| !known.iter().any(|k| &k.name == *r))
            .map(|r| FieldError::new("roles", format!("no role named `{r}`")))
            .collect();
        if !unknown.is_empty() {
            return Err(AuthError::Validation(unknown));
        }
        let mut roles = roles;
        roles.sort();
        roles.dedup();
        let at_ms = crate::auth::now_ms();
        if !self
            .roles
            .set_user_roles(user_id, &roles, now, at_ms)
            .await?
        {
            return Err(AuthError::NotFound);
        }
        self.bus
            .publish(
                Invalidation::UserRolesChanged {
                    user: user_id,
                    roles: Some(roles.clone()),
                    at_ms,
                },
                now,
            )
            .await?;
        self.audit
            .record(
                "role_changed",
                Some(user_id),
                serde_json::json!({"user_roles": roles}),
            )
            .await?;
        Ok(roles)
    }
}

impl Subscriber for Rbac {
    fn apply(&self, event: &Invalidation, _: UnixTime) {
        match *event {
            Invalidation::UserRolesChanged { user, .. }
            | Invalidation::UserDisabled { user, .. } => {
                self.decisions.invalidate_if(move |(u, _), _| *u == user)
            }
            Invalidation::RolesChanged => self.decisions.invalidate_all(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_grant_what_they_name_and_nothing_else() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(permits(&p(&["*"]), "billing:read"));
        assert!(permits(&p(&["billing:*"]), "billing:write"));
        assert!(permits(&p(&["*:read"]), "reports:read"));
        assert!(!permits(&p(&["*:read"]), "reports:write"));
        assert!(!permits(&p(&["billing:*"]), "billing2:read"));
        assert!(!permits(&p(&["billing:read"]), "billing:readwrite"));
        assert!(!permits(&[], "billing:read"));
        assert!(permits(&p(&["admin:*"]), "admin:*"));
    }

    #[test]
    fn permissions_and_names_are_checked() {
        assert!(valid_permission("*"));
        assert!(valid_permission("docs:read"));
        assert!(valid_permission("*:read"));
        assert!(!valid_permission("docs"));
        assert!(!valid_permission("docs:Read"));
        assert!(!valid_permission("docs:read write"));
        assert!(valid_role_name("editor"));
        assert!(!valid_role_name("Editor"));
        assert!(!valid_role_name(""));
    }

    /// Roles from memory; `down` makes every read fail as a dead database.
    struct Roles {
        permissions: Vec<String>,
        down: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl RoleStore for Roles {
        async fn roles(&self) -> Result<Vec<Role>, crate::store::StoreError> {
            Ok(Vec::new())
        }
        async fn put_role(&self, _: &Role) -> Result<(), crate::store::StoreError> {
            Ok(())
        }
        async fn delete_role(&self, _: &str, _: i64) -> Result<bool, crate::store::StoreError> {
            Ok(false)
        }
        async fn set_user_roles(
            &self,
            _: Uuid,
            _: &[String],
            _: UnixTime,
            _: i64,
        ) -> Result<bool, crate::store::StoreError> {
            Ok(false)
        }
        async fn permissions_of(
            &self,
            _: Uuid,
        ) -> Result<Option<(UserStatus, Vec<String>)>, crate::store::StoreError> {
            if self.down.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(crate::store::StoreError::Unavailable {
                    dependency: "database",
                    kind: crate::resilience::failure::FailureKind::Refused,
                    reason: "refused".into(),
                });
            }
            Ok(Some((UserStatus::Active, self.permissions.clone())))
        }
    }

    struct NoAudit;

    #[async_trait::async_trait]
    impl crate::store::AuditStore for NoAudit {
        async fn append_audit(
            &self,
            _: &[crate::store::AuditEvent],
        ) -> Result<(), crate::store::StoreError> {
            Ok(())
        }
        async fn audit_query(
            &self,
            _: &crate::store::AuditFilter,
        ) -> Result<Vec<crate::store::AuditEvent>, crate::store::StoreError> {
            Ok(Vec::new())
        }
        async fn purge_audit(&self, _: UnixTime, _: i64) -> Result<u64, crate::store::StoreError> {
            Ok(0)
        }
    }

    fn rbac(roles: Arc<Roles>) -> Arc<Rbac> {
        Rbac::new(
            roles,
            Duration::from_secs(1),
            Duration::from_secs(60),
            Bus::new(None, None),
            Audit::in_process(Arc::new(NoAudit)),
        )
    }

    fn answer(allowed: bool, source: Source, stale: bool) -> AuthzAnswer {
        AuthzAnswer {
            allowed,
            source,
            stale,
        }
    }

    /// The TTL rules on paused time: fresh for `authz_ttl`, then live; with
    /// the database down, stale up to `authz_ttl + authz_max_stale`, then
    /// 503; never a guess for a decision not made.
    #[tokio::test(start_paused = true)]
    async fn decisions_are_fresh_for_the_ttl_then_stale_only_while_the_database_is_down() {
        let roles = Arc::new(Roles {
            permissions: vec!["docs:*".into()],
            down: false.into(),
        });
        let rbac = rbac(Arc::clone(&roles));
        let user = Uuid::new_v4();
        let check = |p: &'static str| {
            let rbac = Arc::clone(&rbac);
            async move { rbac.check(user, p).await }
        };
        let live = answer(true, Source::Live, false);
        assert_eq!(check("docs:read").await.ok(), Some(live));
        tokio::time::advance(Duration::from_millis(999)).await;
        let cached = answer(true, Source::Cache, false);
        assert_eq!(check("docs:read").await.ok(), Some(cached));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(check("docs:read").await.ok(), Some(live), "past the TTL");

        roles.down.store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::time::advance(Duration::from_secs(1)).await;
        let stale = answer(true, Source::Cache, true);
        assert_eq!(check("docs:read").await.ok(), Some(stale));
        assert!(check("docs:write").await.is_err(), "never decided: 503");
        tokio::time::advance(Duration::from_secs(60) - Duration::from_millis(1)).await;
        assert_eq!(check("docs:read").await.ok(), Some(stale));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(check("docs:read").await.is_err(), "past max_stale: 503");
    }
}
