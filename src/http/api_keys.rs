//! `/api/v1/api-keys`: a user's own API keys (access token only: a key
//! cannot mint keys).

use crate::app::AppState;
use crate::auth::now;
use crate::http::caller::Authenticated;
use crate::http::error::ApiError;
use crate::http::extract::{Json, Path};
use crate::http::openapi::{
    BadRequest, Forbidden, NotFound, PayloadTooLarge, ServiceUnavailable, Unauthorized,
    Unprocessable,
};
use crate::http::users::{Items, rfc3339};
use crate::store::ApiKey;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Deserialize, ToSchema)]
pub struct CreateBody {
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// Of `users`, `admin`, `authz`, `introspect`; a scope the owner's
    /// roles do not allow is refused.
    #[schema(value_type = Vec<Scope>, min_items = 1)]
    scopes: Vec<String>,
    /// Seconds from now (60 s to 10 years); absent: the key does not expire.
    #[schema(minimum = 60, maximum = 315_360_000)]
    expires_in: Option<i64>,
}

/// An API key's scope (schema only: unknown ones are 422 VAL001).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum Scope {
    Users,
    Admin,
    Authz,
    Introspect,
}

/// A key as listed: never its secret.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyView {
    id: Uuid,
    name: String,
    /// The key's first characters, to tell keys apart.
    prefix: String,
    scopes: Vec<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

/// A new key: the secret `key` is shown this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    view: ApiKeyView,
    key: String,
}

fn view(key: &ApiKey) -> ApiKeyView {
    ApiKeyView {
        id: key.id,
        name: key.name.clone(),
        prefix: key.prefix.clone(),
        scopes: key.scopes.clone(),
        created_at: rfc3339(key.created_at),
        expires_at: key.expires_at.map(rfc3339),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/api-keys",
    operation_id = "create_api_key",
    tag = "api-keys",
    security(("bearer" = [])),
    request_body = CreateBody,
    responses(
        (status = 201, description = "The new key, its secret shown once", body = CreatedApiKey),
        BadRequest, Unauthorized, Forbidden, PayloadTooLarge, Unprocessable, ServiceUnavailable,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Json(body): Json<CreateBody>,
) -> Result<impl IntoResponse, ApiError> {
    let created = state
        .api_keys()
        .create(claims.sub, &body.name, &body.scopes, body.expires_in, now())
        .await?;
    let body = CreatedApiKey {
        view: view(&created.stored),
        key: created.key,
    };
    Ok((
        StatusCode::CREATED,
        [("cache-control", "no-store")],
        axum::Json(body),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/api-keys",
    operation_id = "list_api_keys",
    tag = "api-keys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's keys, without secrets", body = Items<ApiKeyView>),
        Unauthorized, Forbidden, ServiceUnavailable,
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
) -> Result<axum::Json<Items<ApiKeyView>>, ApiError> {
    let keys = state.api_keys().list(claims.sub).await?;
    Ok(axum::Json(Items {
        items: keys.iter().map(view).collect(),
    }))
}

/// The key stops working at once on every node.
#[utoipa::path(
    delete,
    path = "/api/v1/api-keys/{id}",
    operation_id = "delete_api_key",
    tag = "api-keys",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A key id (UUID); anything else is 404")),
    responses(
        (status = 204, description = "Key revoked"),
        BadRequest, Unauthorized, Forbidden, NotFound, ServiceUnavailable,
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    state.api_keys().delete(claims.sub, id, now()).await?;
    Ok(StatusCode::NO_CONTENT)
}
