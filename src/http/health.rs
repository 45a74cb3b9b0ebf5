//! `/livez`, `/readyz`, `/api/v1/health`: no authentication, no secrets.

use crate::app::AppState;
use crate::resilience::health::HealthReport;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa::ToSchema;

/// `/livez` (schema only).
#[derive(ToSchema)]
pub struct Liveness {
    #[schema(pattern = "^alive$")]
    pub status: String,
}

/// `/readyz` (schema only): `ready`, or `not_ready` with a reason.
#[derive(ToSchema)]
pub struct Readiness {
    #[schema(pattern = "^(ready|not_ready)$")]
    pub status: String,
    #[schema(required = false)]
    pub reason: Option<String>,
}

#[utoipa::path(
    get,
    path = "/livez",
    tag = "health",
    responses((status = 200, description = "The process serves", body = Liveness))
)]
pub async fn livez() -> Response {
    axum::Json(json!({ "status": "alive" })).into_response()
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Keys and revocations loaded", body = Readiness),
        (status = 503, description = "Not ready yet", body = Readiness),
    )
)]
/// Ready while this node can verify tokens: keys and revocations loaded.
/// No queries.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready().is_ready() && state.keys().is_ready() {
        axum::Json(json!({ "status": "ready" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "not_ready", "reason": "signing keys or revocations not loaded" })),
        )
            .into_response()
    }
}

/// Every dependency's health and the node's mode; 503 only when unhealthy.
#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "health",
    responses(
        (status = 200, description = "Healthy or degraded", body = HealthReport),
        (status = 503, description = "Unhealthy: this node cannot verify tokens", body = HealthReport),
    )
)]
pub async fn health(State(state): State<AppState>) -> Response {
    let report = state.health().report(state.keys().is_ready()).await;
    let status = if report.status.serving() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}
