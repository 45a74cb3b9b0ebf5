//! The HTTP layer: thin handlers, one file per resource. Handlers parse,
//! call the domain and map the result; status codes are chosen only in
//! `ApiError`.

pub mod admin;
pub mod admin_users;
pub mod api_keys;
pub mod auth;
pub mod authz;
pub mod caller;
pub mod extract;
pub mod health;
pub mod introspect;
pub mod middleware;
pub mod users;
pub mod well_known;

use crate::app::AppState;
use crate::error::ApiError;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, patch, post, put};

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
        .route("/auth/introspect", post(introspect::introspect))
        .route("/api-keys", post(api_keys::create).get(api_keys::list))
        .route("/api-keys/{id}", delete(api_keys::delete))
        .route("/authz/check", post(authz::check))
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
        .route("/admin/keys/revoke-all", post(admin::revoke_all_keys))
        .route("/admin/users", get(admin_users::search_users))
        .route("/admin/users/{id}/roles", put(admin_users::set_user_roles))
        .route("/admin/users/{id}/disable", post(admin_users::disable_user))
        .route(
            "/admin/roles",
            get(admin_users::roles)
                .post(admin_users::put_role)
                .delete(admin_users::delete_role),
        )
        .route(
            "/admin/roles/{name}",
            delete(admin_users::delete_role_named),
        )
        .route("/admin/cache/stats", get(admin::cache_stats))
        .route("/admin/cache/cleanup", post(admin::cache_cleanup))
        .route("/admin/jwks/refresh", post(admin::refresh_jwks))
        .route("/admin/audit", get(admin::audit));
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
