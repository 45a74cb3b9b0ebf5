//! `/api/v1/admin/*` (role `admin`): the operator's view of the circuit
//! breakers, and a reset for each.

use crate::app::AppState;
use crate::error::ApiError;
use crate::http::extract::Credential;
use crate::resilience::breaker::Snapshot;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A caller holding the `admin` role, or an emergency token with scope
/// `admin`; anyone else authenticated is AUTH005.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let granted = match Credential::from_request_parts(parts, state).await? {
            Credential::User(claims) => claims.roles.iter().any(|r| r == "admin"),
            Credential::Emergency(claims) => claims.scope.iter().any(|s| s == "admin"),
        };
        if granted {
            Ok(Admin)
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

fn wall(t: Option<std::time::SystemTime>) -> Value {
    t.and_then(|t| OffsetDateTime::from(t).format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

fn view(s: &Snapshot) -> Value {
    json!({
        "state": s.state.as_str(),
        "failure_rate": (s.failure_rate * 10.0).round() / 10.0,
        "slow_call_rate": (s.slow_call_rate * 10.0).round() / 10.0,
        "calls": s.calls,
        "failures": s.failures,
        "opened_at": wall(s.opened_at),
        "next_attempt_at": wall(s.next_attempt_at),
    })
}

pub async fn circuit_breakers(_: Admin, State(state): State<AppState>) -> impl IntoResponse {
    let breakers: serde_json::Map<String, Value> = state
        .guards
        .iter()
        .map(|g| (g.name().to_string(), view(&g.breaker().snapshot())))
        .collect();
    axum::Json(json!({ "circuit_breakers": breakers }))
}

pub async fn reset_circuit_breaker(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let guard = state
        .guards
        .iter()
        .find(|g| g.name() == name)
        .ok_or(ApiError::NotFound)?;
    guard.breaker().reset();
    tracing::warn!(dependency = %name, "circuit breaker reset by an admin");
    Ok(axum::Json(view(&guard.breaker().snapshot())))
}

/// Starts a rotation: the new key is a standby for `jwks_max_age`, then signs.
pub async fn rotate_keys(
    _: Admin,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    let kid = state
        .keys
        .rotate(crate::auth::now())
        .await
        .map_err(key_error)?;
    Ok(axum::Json(json!({ "kid": kid })))
}

/// Key leak: every key revoked, a new one signing now, every session revoked.
pub async fn revoke_all_keys(
    _: Admin,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    let (kid, sessions) = state
        .keys
        .revoke_all(crate::auth::now())
        .await
        .map_err(key_error)?;
    Ok(axum::Json(
        json!({ "kid": kid, "sessions_revoked": sessions }),
    ))
}

fn key_error(e: crate::auth::keys::KeyError) -> ApiError {
    match e {
        crate::auth::keys::KeyError::Store(e) => e.into(),
        other => ApiError::internal(other),
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
