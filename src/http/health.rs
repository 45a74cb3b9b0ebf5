//! `/livez`, `/readyz`, `/api/v1/health`: no authentication, no secrets.

use crate::app::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub async fn livez() -> Response {
    axum::Json(json!({ "status": "alive" })).into_response()
}

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

pub async fn health(State(state): State<AppState>) -> Response {
    let report = state.health().report(state.keys().is_ready()).await;
    let status = if report.status.serving() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}
