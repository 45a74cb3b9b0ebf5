//! The readiness gate: until start-up has loaded keys and revocations
//! (`app::startup`), only what needs no store is served; everything else
//! answers 503 SVC001 at once.

use crate::app::AppState;
use crate::http::error::ApiError;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Until the node is ready, only what needs no store is served: liveness,
/// readiness, metrics, health, the status page, the OpenAPI document and
/// emergency tokens.
pub async fn require_ready(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if state.ready().is_ready() || served_unready(&request) {
        return next.run(request).await;
    }
    ApiError::Unavailable {
        dependency: "database".into(),
        retry_after_secs: 1,
    }
    .into_response()
}

fn served_unready(request: &Request) -> bool {
    match request.uri().path() {
        "/livez"
        | "/readyz"
        | "/metrics"
        | "/status"
        | "/"
        | "/api/v1/health"
        | "/api/v1/openapi.json" => true,
        _ => carries_emergency_token(request),
    }
}

/// Emergency tokens are told apart by their `kid`, like `caller` does.
fn carries_emergency_token(request: &Request) -> bool {
    request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| jsonwebtoken::decode_header(token.trim()).ok())
        .and_then(|header| header.kid)
        .is_some_and(|kid| kid == crate::auth::emergency::KID)
}
