//! The operator endpoints (`/metrics`, `/status` and `/`, its redirect):
//! served on the main listener, or on `[admin] listen` alone when that is
//! set (DESIGN.md §3, §6), so an operator can keep them off the public
//! interface. Both listeners build their routes from `endpoints()`, so an
//! endpoint added here is on whichever listener the configuration picks.

use super::middleware::edge::Edge;
use super::middleware::security_headers::Hsts;
use super::{admin, method_not_allowed, not_found, status};
use crate::app::AppState;
use axum::Router;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The operator routes, without state, documented: merged into the main
/// router (and its OpenAPI document) when `[admin] listen` is unset.
pub fn endpoints() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(admin::metrics))
        .routes(routes!(status::page))
        .routes(routes!(status::home))
}

/// The whole router of the `[admin] listen` listener: the operator routes
/// and nothing else, behind the same edge layer (request ids, headers,
/// access log) as the main listener.
pub fn routes(state: AppState, hsts: Hsts) -> Router {
    Router::from(endpoints())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Edge::new(hsts))
        .with_state(state)
}
