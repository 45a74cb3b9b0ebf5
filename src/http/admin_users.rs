//! `/api/v1/admin/users*` and `/api/v1/admin/roles*`: user search, roles,
//! disabling, and role definitions.

use crate::app::AppState;
use crate::auth::now;
use crate::http::caller::Admin;
use crate::http::error::ApiError;
use crate::http::extract::{Json, Path, Query};
use crate::http::users::{Items, UserView, rfc3339};
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    query: String,
    limit: Option<i64>,
}

#[derive(Deserialize)]
pub struct RolesBody {
    roles: Vec<String>,
}

#[derive(Deserialize)]
pub struct RoleBody {
    name: String,
    #[serde(default)]
    permissions: Vec<String>,
}

#[derive(Deserialize)]
pub struct RoleName {
    name: String,
}

fn user_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::NotFound)
}

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

/// `DELETE /admin/roles` with `{name}`.
pub async fn delete_role(
    _: Admin,
    State(state): State<AppState>,
    Json(body): Json<RoleName>,
) -> Result<StatusCode, ApiError> {
    state.rbac().delete_role(body.name.trim(), now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /admin/roles/{name}`.
pub async fn delete_role_named(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.rbac().delete_role(&name, now()).await?;
    Ok(StatusCode::NO_CONTENT)
}
