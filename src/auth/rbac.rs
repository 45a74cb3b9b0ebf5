//! Role-based access control. A role holds `resource:action` permissions
//! where either half may be `*` (and `*` alone is everything); the built-in
//! role `admin` holds `*` and cannot be changed.
//!
//! `check` answers from a per-(user, permission) decision cache: fresh for
//! `[cache] authz_ttl`; past that the database is asked, and if it cannot
//! answer, a decision up to `authz_max_stale` old is served marked stale.
//! With no decision cached and no database, the answer is 503 — never a
//! guess.

use crate::auth::audit::Audit;
use crate::auth::error::{AuthError, FieldError};
use crate::cache::bus::{Bus, Invalidation, Subscriber};
use crate::cache::{CacheView, CountedCache};
use crate::store::{Role, RoleStore, UnixTime, UserStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};
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
struct Decision {
    allowed: bool,
    decided: Instant,
}

pub struct Rbac {
    roles: Arc<dyn RoleStore>,
    decisions: CountedCache<(Uuid, String), Decision>,
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
        if let Some(d) = cached
            && d.decided.elapsed() < self.ttl
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
                let decision = Decision {
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
            Err(AuthError::Unavailable { .. } | AuthError::ReadOnly)
                if cached.is_some_and(|d| d.decided.elapsed() < self.ttl + self.max_stale) =>
            {
                let d = cached.expect("checked above");
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
        self.bus.publish(Invalidation::RolesChanged, now);
        self.audit.record(
            "role_changed",
            None,
            serde_json::json!({"role": role.name, "permissions": role.permissions}),
        );
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
        self.bus.publish(Invalidation::RolesChanged, now);
        self.bus.publish(
            Invalidation::RoleDeleted {
                name: name.to_string(),
                at_ms,
            },
            now,
        );
        self.audit.record(
            "role_changed",
            None,
            serde_json::json!({"role": name, "deleted": true}),
        );
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
        self.bus.publish(
            Invalidation::UserRolesChanged {
                user: user_id,
                roles: Some(roles.clone()),
                at_ms,
            },
            now,
        );
        self.audit.record(
            "role_changed",
            Some(user_id),
            serde_json::json!({"user_roles": roles}),
        );
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
}
