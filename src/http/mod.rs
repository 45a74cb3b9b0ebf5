//! The HTTP layer: thin handlers, one file per resource. Handlers parse,
//! call the domain and map the result; status codes are chosen only in
//! `ApiError`.

pub mod admin;
pub mod admin_users;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod auth_outcomes;
pub mod authz;
pub mod caller;
pub mod client_address;
pub mod error;
pub mod extract;
pub mod health;
pub mod introspect;
pub mod middleware;
pub mod operator;
pub mod status;
pub mod tls;
pub mod users;
pub mod well_known;

use crate::app::AppState;
use crate::config::Environment;
use crate::http::error::ApiError;
use axum::Router;
use axum::routing::{delete, get, patch, post, put};
use middleware::edge::Edge;
use middleware::security_headers::{self, Hsts};

/// Request bodies larger than this are refused with 413 REQ002.
pub const BODY_LIMIT: usize = 64 * 1024;

pub fn routes(state: AppState, hsts: Hsts) -> Router {
    let api = Router::new()
        .route("/api/v1/auth/register", post(auth::register))
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/refresh", post(auth::refresh))
        .route("/api/v1/auth/logout", post(auth::logout))
        .route("/api/v1/auth/logout-all", post(auth::logout_all))
        .route("/api/v1/auth/verify", get(auth::verify))
        .route("/api/v1/auth/introspect", post(introspect::introspect))
        .route(
            "/api/v1/api-keys",
            post(api_keys::create).get(api_keys::list),
        )
        .route("/api/v1/api-keys/{id}", delete(api_keys::delete))
        .route("/api/v1/authz/check", post(authz::check))
        .route(
            "/api/v1/users/me",
            get(users::me)
                .put(users::update_me)
                .delete(users::delete_me),
        )
        .route("/api/v1/users/me/password", patch(users::change_password))
        .route("/api/v1/users/me/sessions", get(users::sessions))
        .route(
            "/api/v1/users/me/sessions/{id}",
            delete(users::delete_session),
        )
        .route("/api/v1/health", get(health::health))
        .merge(admin_routes());
    // Full paths rather than `nest("/api/v1", …)`: nesting rewrites the
    // URI of every request (strip_prefix), measurable on the verify path.
    // With `[admin] listen` set, the operator endpoints live on that
    // listener alone (`operator::routes`) and this one answers 404 for them.
    let api = if state.config().admin.listen.is_some() {
        api
    } else {
        api.merge(operator::endpoints())
    };
    api.route("/.well-known/jwks.json", get(well_known::jwks))
        .route(
            "/.well-known/openid-configuration",
            get(well_known::openid_configuration),
        )
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // One layer: each `Router::layer` call wraps every route in another
        // boxed service, cloned and boxing its future on every request. The
        // body limit is applied by the body extractors (`extract::limited`).
        // Until start-up has loaded keys and revocations (PostgreSQL down
        // at start), 503 for everything that needs a store.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::ready::require_ready,
        ))
        .layer(Edge::new(hsts))
        .with_state(state)
}

/// `/api/v1/admin/*`: breakers, keys, users, roles, caches, JWKS, audit.
fn admin_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/admin/circuit-breakers",
            get(admin::circuit_breakers),
        )
        .route(
            "/api/v1/admin/circuit-breakers/{name}/reset",
            post(admin::reset_circuit_breaker),
        )
        .route("/api/v1/admin/keys/rotate", post(admin::rotate_keys))
        .route(
            "/api/v1/admin/keys/revoke-all",
            post(admin::revoke_all_keys),
        )
        .route("/api/v1/admin/users", get(admin_users::search_users))
        .route(
            "/api/v1/admin/users/{id}/roles",
            put(admin_users::set_user_roles),
        )
        .route(
            "/api/v1/admin/users/{id}/disable",
            post(admin_users::disable_user),
        )
        .route(
            "/api/v1/admin/users/{id}/enable",
            post(admin_users::enable_user),
        )
        .route(
            "/api/v1/admin/users/{id}/logout-all",
            post(admin_users::logout_all_user),
        )
        .route(
            "/api/v1/admin/roles",
            get(admin_users::roles)
                .post(admin_users::put_role)
                .delete(admin_users::delete_role),
        )
        .route(
            "/api/v1/admin/roles/{name}",
            delete(admin_users::delete_role_named),
        )
        .route("/api/v1/admin/cache/stats", get(admin::cache_stats))
        .route("/api/v1/admin/cache/cleanup", post(admin::cache_cleanup))
        .route("/api/v1/admin/jwks/refresh", post(admin::refresh_jwks))
        .route("/api/v1/admin/audit", get(audit::audit))
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The public listener's router.
pub fn router(state: &AppState) -> Router {
    let hsts = security_headers::Hsts(state.config().env == Environment::Production);
    routes(state.clone(), hsts)
}

/// The `[admin] listen` listener's router (`/metrics`).
pub fn admin_router(state: &AppState) -> Router {
    let hsts = security_headers::Hsts(state.config().env == Environment::Production);
    operator::routes(state.clone(), hsts)
}
