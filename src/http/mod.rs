//! The HTTP layer: thin handlers, one file per resource. Handlers parse,
//! call the domain and map the result; status codes are chosen only in
//! `ApiError`.

pub mod admin;
pub mod admin_schemas;
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
pub mod openapi;
pub mod operator;
pub mod status;
pub mod tls;
pub mod users;
pub mod well_known;

use crate::app::AppState;
use crate::config::Environment;
use crate::http::error::ApiError;
use axum::{Extension, Router};
use middleware::edge::Edge;
use middleware::security_headers::{self, Hsts};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Request bodies larger than this are refused with 413 REQ002.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Every route of the public listener, each registered with its
/// `#[utoipa::path]` documentation (`routes!`): what this serves and what
/// `/api/v1/openapi.json` describes are one list. Add routes here only
/// through `.routes(routes!(…))`; `tests/api/openapi.rs` fails on a bare
/// `.route(`.
fn api(operator_here: bool, document: openapi::Document) -> OpenApiRouter<AppState> {
    let (schemas, paths, served) = routes!(openapi::document);
    let api = OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(auth::register))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::logout_all))
        .routes(routes!(auth::verify))
        .routes(routes!(introspect::introspect))
        .routes(routes!(api_keys::create, api_keys::list))
        .routes(routes!(api_keys::delete))
        .routes(routes!(authz::check))
        .routes(routes!(users::me, users::update_me, users::delete_me))
        .routes(routes!(users::change_password))
        .routes(routes!(users::sessions))
        .routes(routes!(users::delete_session))
        .routes(routes!(health::health))
        // The document, from a cell filled once the router is built.
        .routes((schemas, paths, served.layer(Extension(document))))
        .merge(admin_routes());
    // Full paths rather than `nest("/api/v1", …)`: nesting rewrites the
    // URI of every request (strip_prefix), measurable on the verify path.
    // With `[admin] listen` set, the operator endpoints live on that
    // listener alone (`operator::routes`) and this one answers 404 for them
    // (and leaves them out of its document).
    let api = if operator_here {
        api.merge(operator::endpoints())
    } else {
        api
    };
    api.routes(routes!(well_known::jwks))
        .routes(routes!(well_known::openid_configuration))
        .routes(routes!(health::livez))
        .routes(routes!(health::readyz))
}

/// The OpenAPI document of the public listener under `state`'s
/// configuration, exactly as `/api/v1/openapi.json` serves it.
pub fn openapi_document(state: &AppState) -> utoipa::openapi::OpenApi {
    api(
        state.config().admin.listen.is_none(),
        openapi::Document::default(),
    )
    .into_openapi()
}

/// Every path the public listener serves with the operator endpoints on it
/// (`[admin] listen` unset), from the same registrations as the router.
pub fn route_paths() -> Vec<String> {
    api(true, openapi::Document::default())
        .into_openapi()
        .paths
        .paths
        .into_keys()
        .collect()
}

pub fn routes(state: AppState, hsts: Hsts) -> Router {
    let document = openapi::Document::default();
    let (api, openapi) =
        api(state.config().admin.listen.is_none(), document.clone()).split_for_parts();
    document.set(&openapi);
    api.fallback(not_found)
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
fn admin_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(admin::circuit_breakers))
        .routes(routes!(admin::reset_circuit_breaker))
        .routes(routes!(admin::rotate_keys))
        .routes(routes!(admin::revoke_all_keys))
        .routes(routes!(admin_users::search_users))
        .routes(routes!(admin_users::set_user_roles))
        .routes(routes!(admin_users::disable_user))
        .routes(routes!(admin_users::enable_user))
        .routes(routes!(admin_users::logout_all_user))
        .routes(routes!(
            admin_users::roles,
            admin_users::put_role,
            admin_users::delete_role
        ))
        .routes(routes!(admin_users::delete_role_named))
        .routes(routes!(admin::cache_stats))
        .routes(routes!(admin::cache_cleanup))
        .routes(routes!(admin::refresh_jwks))
        .routes(routes!(audit::audit))
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
