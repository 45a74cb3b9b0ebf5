//! `/api/v1/admin/users*` and `/api/v1/admin/roles*`: user search, roles,
//! disabling, and role definitions.

use crate::app::AppState;
use crate::auth::now;
use crate::http::admin_schemas::{RoleStored, RoleView, UserRoles};
use crate::http::caller::Admin;
use crate::http::error::ApiError;
use crate::http::extract::{Json, Path, Query};
use crate::http::openapi::{
    BadRequest, Forbidden, NotFound, PayloadTooLarge, ServiceUnavailable, TooManyRequests,
    Unauthorized, Unprocessable,
};
use crate::http::users::{Items, UserView, rfc3339};
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Part of an email or username; empty: every user.
    #[serde(default)]
    #[param(required = false)]
    query: String,
    /// At most this many users (1 to 500, default 50).
    limit: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
pub struct RolesBody {
    roles: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct RoleBody {
    /// Lower-case letters, digits, `_`, `-`, `.`; not `admin`.
    #[schema(pattern = "^[a-z0-9_.-]{1,64}$")]
    name: String,
    /// `resource:action`, either may be `*`; `*` alone is everything.
    #[serde(default)]
    #[schema(value_type = Vec<String>, required = false)]
    permissions: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct RoleName {
    name: String,
}

fn user_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::NotFound)
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/users",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    params(SearchQuery),
    responses(
        (status = 200, description = "Matching users", body = Items<UserView>),
        BadRequest, Unauthorized, Forbidden, PayloadTooLarge, TooManyRequests, ServiceUnavailable,
    )
)]
pub async fn search_users(
    _: Admin,
    State(state): State<AppState>,
    Query(q): Query<SearchQuery>,
) -> Result<axum::Json<Items<UserView>>, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let users = state.accounts().search(&q.query, limit).await?;
    Ok(axum::Json(Items {
        items: users.into_iter().map(UserView::from).collect(),
    }))
}

#[utoipa::path(
    put,
    path = "/api/v1/admin/users/{id}/roles",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "A user id (UUID); anything else is 404")),
    request_body = RolesBody,
    responses(
        (status = 200, description = "The user's roles now", body = UserRoles),
        BadRequest, Unauthorized, Forbidden, NotFound, PayloadTooLarge, Unprocessable,
        TooManyRequests, ServiceUnavailable,
    )
)]
pub async fn set_user_roles(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<RolesBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = user_id(&id)?;
    let roles = state.rbac().set_user_roles(id, body.roles, now()).await?;
    Ok(axum::Json(json!({ "id": id, "roles": roles })))
}

/// Disables the account: every session and token of the user stops working.
#[utoipa::path(
    post,
    path = "/api/v1/admin/users/{id}/disable",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "A user id (UUID); anything else is 404")),
    responses(
        (status = 204, description = "Disabled"),
        BadRequest, Unauthorized, Forbidden, NotFound, TooManyRequests, ServiceUnavailable,
    )
)]
pub async fn disable_user(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .accounts()
        .disable(user_id(&id)?, &admin.actor, now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/users/{id}/enable",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "A user id (UUID); anything else is 404")),
    responses(
        (status = 204, description = "Enabled"),
        BadRequest, Unauthorized, Forbidden, NotFound, TooManyRequests, ServiceUnavailable,
    )
)]
pub async fn enable_user(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .accounts()
        .enable(user_id(&id)?, &admin.actor, now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/users/{id}/logout-all",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "A user id (UUID); anything else is 404")),
    responses(
        (status = 204, description = "Every session of the user revoked"),
        BadRequest, Unauthorized, Forbidden, NotFound, TooManyRequests, ServiceUnavailable,
    )
)]
/// What the user's own logout-all does, on an admin's word (a stolen
/// device, say): every token and session of the user ends.
pub async fn logout_all_user(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = user_id(&id)?;
    state.accounts().ensure_exists(id).await?;
    state.sessions().logout_all(id, now()).await?;
    state
        .audit()
        .record("user_logout_all", Some(id), json!({"by": admin.actor}))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/roles",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Every role", body = Items<RoleView>),
        Unauthorized, Forbidden, TooManyRequests, ServiceUnavailable,
    )
)]
pub async fn roles(
    _: Admin,
    State(state): State<AppState>,
) -> Result<axum::Json<Items<Value>>, ApiError> {
    let items = state
        .rbac()
        .roles()
        .await?
        .into_iter()
        .map(|r| {
            json!({
                "name": r.name,
                "permissions": r.permissions,
                "updated_at": rfc3339(r.updated_at),
            })
        })
        .collect();
    Ok(axum::Json(Items { items }))
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/roles",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    request_body = RoleBody,
    responses(
        (status = 200, description = "The role as stored", body = RoleStored),
        BadRequest, Unauthorized, Forbidden, PayloadTooLarge, Unprocessable, TooManyRequests,
        ServiceUnavailable,
    )
)]
/// Creates a role or replaces its permissions.
pub async fn put_role(
    _: Admin,
    State(state): State<AppState>,
    Json(body): Json<RoleBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let role = state
        .rbac()
        .put_role(body.name.trim(), body.permissions, now())
        .await?;
    Ok(axum::Json(
        json!({ "name": role.name, "permissions": role.permissions }),
    ))
}

#[utoipa::path(
    delete,
    path = "/api/v1/admin/roles",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    request_body = RoleName,
    responses(
        (status = 204, description = "Deleted"),
        BadRequest, Unauthorized, Forbidden, NotFound, PayloadTooLarge, Unprocessable,
        TooManyRequests, ServiceUnavailable,
    )
)]
/// `DELETE /admin/roles` with `{name}`.
pub async fn delete_role(
    _: Admin,
    State(state): State<AppState>,
    Json(body): Json<RoleName>,
) -> Result<StatusCode, ApiError> {
    state.rbac().delete_role(body.name.trim(), now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/api/v1/admin/roles/{name}",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    params(("name" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        BadRequest, Unauthorized, Forbidden, NotFound, Unprocessable, TooManyRequests,
        ServiceUnavailable,
    )
)]
/// `DELETE /admin/roles/{name}`.
pub async fn delete_role_named(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.rbac().delete_role(&name, now()).await?;
    Ok(StatusCode::NO_CONTENT)
}
