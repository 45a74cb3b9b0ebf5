//! The HTTP layer: thin handlers, one file per resource. Handlers parse,
//! call the domain and map the result; status codes are chosen only in
//! `ApiError`.

pub mod admin;
pub mod auth;
pub mod extract;
pub mod health;
pub mod middleware;
pub mod users;
pub mod well_known;

use crate::app::AppState;
use crate::error::ApiError;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, patch, post};

/// Request bodies larger than this are refused with 413 REQ002.
pub const BODY_LIMIT: usize = 64 * 1024;

pub fn routes(state: AppState) -> Router {
    let api = Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/logout-all", post(auth::logout_all))
        .route("/auth/verify", get(auth::verify))
        .route(
            "/users/me",
            get(users::me)
                .put(users::update_me)
                .delete(users::delete_me),
        )
        .route("/users/me/password", patch(users::change_password))
        .route("/users/me/sessions", get(users::sessions))
        .route("/users/me/sessions/{id}", delete(users::delete_session))
        .route("/health", get(health::health))
        .route("/admin/circuit-breakers", get(admin::circuit_breakers))
        .route(
            "/admin/circuit-breakers/{name}/reset",
            post(admin::reset_circuit_breaker),
        )
        .route("/admin/keys/rotate", post(admin::rotate_keys))
        .route("/admin/keys/revoke-all", post(admin::revoke_all_keys));
    Router::new()
        .nest("/api/v1", api)
        .route("/.well-known/jwks.json", get(well_known::jwks))
        .route(
            "/.well-known/openid-configuration",
            get(well_known::openid_configuration),
        )
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(admin::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
