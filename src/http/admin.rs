//! `/api/v1/admin/*`: the operator's view of the circuit breakers and
//! caches, key rotation and external JWKS refresh. Users and roles are in
//! `admin_users.rs`, the audit log in `audit.rs`.

use crate::app::AppState;
use crate::auth::key_rotation::Delivery;
use crate::cache::CacheView;
use crate::http::admin_schemas::{
    BreakerView, CacheStatsView, CircuitBreakers, JwksRefreshed, KeyRotated, KeysRevoked,
};
use crate::http::caller::Admin;
use crate::http::error::ApiError;
use crate::http::extract::Path;
use crate::http::openapi::{
    BadRequest, Forbidden, NotFound, ServiceUnavailable, TooManyRequests, Unauthorized,
};
use crate::resilience::DependencyGuard;
use axum::extract::State;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn wall(t: Option<std::time::SystemTime>) -> Value {
    t.and_then(|t| OffsetDateTime::from(t).format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

/// The breaker and, for operators only, the last failure in full (public
/// health shows its kind alone).
fn view(guard: &DependencyGuard) -> Value {
    let s = guard.breaker().snapshot();
    let last_failure = guard.stats().last_failure.map_or(Value::Null, |f| {
        json!({
            "at": f.at.format(&Rfc3339).ok(),
            "kind": f.kind.as_str(),
            "reason": f.reason,
        })
    });
    json!({
        "state": s.state.as_str(),
        "failure_rate": (s.failure_rate * 10.0).round() / 10.0,
        "slow_call_rate": (s.slow_call_rate * 10.0).round() / 10.0,
        "calls": s.calls,
        "failures": s.failures,
        "opened_at": wall(s.opened_at),
        "next_attempt_at": wall(s.next_attempt_at),
        "last_failure": last_failure,
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/circuit-breakers",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Every dependency's breaker", body = CircuitBreakers),
        Unauthorized, Forbidden, TooManyRequests, ServiceUnavailable,
    )
)]
pub async fn circuit_breakers(_: Admin, State(state): State<AppState>) -> impl IntoResponse {
    let breakers: serde_json::Map<String, Value> = state
        .guards()
        .iter()
        .map(|g| (g.name().to_string(), view(g)))
        .collect();
    axum::Json(json!({ "circuit_breakers": breakers }))
}

/// Closes a breaker now.
#[utoipa::path(
    post,
    path = "/api/v1/admin/circuit-breakers/{name}/reset",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    params(("name" = String, Path, description = "A dependency (`database`, `redis`…)")),
    responses(
        (status = 200, description = "The breaker after the reset", body = BreakerView),
        BadRequest, Unauthorized, Forbidden, NotFound, TooManyRequests, ServiceUnavailable,
    )
)]
pub async fn reset_circuit_breaker(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let guard = state
        .guards()
        .iter()
        .find(|g| g.name() == name)
        .ok_or(ApiError::NotFound)?;
    guard.breaker().reset();
    tracing::warn!(dependency = %name, "circuit breaker reset by an admin");
    Ok(axum::Json(view(guard)))
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/keys/rotate",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The new key's id", body = KeyRotated),
        Unauthorized, Forbidden, TooManyRequests, ServiceUnavailable,
    )
)]
/// Starts a rotation: the new key is a standby for `jwks_max_age`, then signs.
pub async fn rotate_keys(
    admin: Admin,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    let change = state
        .key_rotation()
        .rotate(&admin.actor, Delivery::Queued, crate::auth::now())
        .await?;
    Ok(axum::Json(json!({ "kid": change.kid })))
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/keys/revoke-all",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The new signing key; every session revoked", body = KeysRevoked),
        Unauthorized, Forbidden, TooManyRequests, ServiceUnavailable,
    )
)]
/// Key leak: every key revoked, a new one signing now, every session revoked.
pub async fn revoke_all_keys(
    admin: Admin,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    let change = state
        .key_rotation()
        .revoke_all(&admin.actor, Delivery::Queued, crate::auth::now())
        .await?;
    Ok(axum::Json(
        json!({ "kid": change.kid, "sessions_revoked": change.sessions_revoked }),
    ))
}

/// Prometheus text format; on `[admin] listen` alone when that is set.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::cache::export_requests(&caches(&state));
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics().render(),
    )
}

fn caches(state: &AppState) -> [&dyn CacheView; 3] {
    [
        state.validation().view(),
        state.api_keys().view(),
        state.rbac().view(),
    ]
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/cache/stats",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Per cache: entries, hits, misses, hit rate, evictions", body = CacheStatsView),
        Unauthorized, Forbidden, TooManyRequests, ServiceUnavailable,
    )
)]
/// Per cache: entries, hits, misses, hit rate, evictions.
pub async fn cache_stats(_: Admin, State(state): State<AppState>) -> impl IntoResponse {
    let stats: serde_json::Map<String, Value> = caches(&state)
        .iter()
        .map(|c| (c.name().to_string(), json!(c.stats())))
        .collect();
    axum::Json(json!({ "caches": stats }))
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/cache/cleanup",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The caches after the cleanup", body = CacheStatsView),
        Unauthorized, Forbidden, TooManyRequests, ServiceUnavailable,
    )
)]
/// Drops expired entries now and purges expired revocations.
pub async fn cache_cleanup(_: Admin, State(state): State<AppState>) -> impl IntoResponse {
    for cache in caches(&state) {
        cache.cleanup();
    }
    state.revocations().purge(crate::auth::now());
    cache_stats(
        Admin {
            actor: String::new(),
        },
        State(state),
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/jwks/refresh",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Each upstream issuer's outcome", body = JwksRefreshed),
        Unauthorized, Forbidden, TooManyRequests, ServiceUnavailable,
    )
)]
/// Refetches every external issuer's JWKS now.
pub async fn refresh_jwks(_: Admin, State(state): State<AppState>) -> impl IntoResponse {
    let mut results = serde_json::Map::new();
    for idp in state.external().all() {
        let outcome = match idp.refresh_now().await {
            Ok(()) => json!({"refreshed": true}),
            Err(e) => json!({"refreshed": false, "error": e.to_string()}),
        };
        results.insert(idp.name().to_string(), outcome);
    }
    axum::Json(json!({ "idps": results }))
}
