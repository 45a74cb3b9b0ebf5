//! The shapes of the admin answers that `admin.rs` and `admin_users.rs`
//! build as JSON values: schema only, for the OpenAPI document. Kept next to
//! those handlers so a changed answer and its schema are one diff apart;
//! `scripts/api-check` compares them against live answers.

use crate::cache::CacheStats;
use crate::resilience::breaker::BreakerState;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// `GET /admin/circuit-breakers`.
#[derive(ToSchema)]
pub struct CircuitBreakers {
    /// By dependency name.
    pub circuit_breakers: BTreeMap<String, BreakerView>,
}

/// One breaker, with the last failure in full (operators only).
#[derive(ToSchema)]
pub struct BreakerView {
    pub state: BreakerState,
    /// Percent of recent calls that failed.
    pub failure_rate: f64,
    /// Percent of recent calls slower than the slow-call threshold.
    pub slow_call_rate: f64,
    pub calls: u32,
    pub failures: u32,
    #[schema(format = DateTime)]
    pub opened_at: Option<String>,
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    pub last_failure: Option<LastFailure>,
}

#[derive(ToSchema)]
pub struct LastFailure {
    #[schema(format = DateTime)]
    pub at: Option<String>,
    /// `timeout`, `refused`, `reset`, `tls`, `http 5xx`, `breaker open`…
    pub kind: String,
    /// The error text in full.
    pub reason: String,
}

/// `POST /admin/keys/rotate`: the new key, a standby for `jwks_max_age`.
#[derive(ToSchema)]
pub struct KeyRotated {
    pub kid: String,
}

/// `POST /admin/keys/revoke-all`: the new signing key and how many
/// sessions were revoked.
#[derive(ToSchema)]
pub struct KeysRevoked {
    pub kid: String,
    pub sessions_revoked: Option<u64>,
}

/// `GET /admin/cache/stats`, `POST /admin/cache/cleanup`.
#[derive(ToSchema)]
pub struct CacheStatsView {
    /// By cache name (`validation`, `api_keys`, `authz`).
    pub caches: BTreeMap<String, CacheStats>,
}

/// `POST /admin/jwks/refresh`.
#[derive(ToSchema)]
pub struct JwksRefreshed {
    /// By upstream issuer name.
    pub idps: BTreeMap<String, IdpRefresh>,
}

#[derive(ToSchema)]
pub struct IdpRefresh {
    pub refreshed: bool,
    #[schema(required = false)]
    pub error: Option<String>,
}

/// One security event of `GET /admin/audit`.
#[derive(ToSchema)]
pub struct AuditEventView {
    pub id: i64,
    #[schema(format = DateTime)]
    pub at: String,
    pub kind: String,
    pub user_id: Option<Uuid>,
    /// What the event records; its members depend on `kind`.
    #[schema(value_type = Object)]
    pub detail: (),
}

/// `PUT /admin/users/{id}/roles`.
#[derive(ToSchema)]
pub struct UserRoles {
    pub id: Uuid,
    pub roles: Vec<String>,
}

/// A role as listed by `GET /admin/roles`.
#[derive(ToSchema)]
pub struct RoleView {
    pub name: String,
    /// `resource:action`, `*` wildcards.
    pub permissions: Vec<String>,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// A role as `POST /admin/roles` stored it.
#[derive(ToSchema)]
pub struct RoleStored {
    pub name: String,
    pub permissions: Vec<String>,
}
