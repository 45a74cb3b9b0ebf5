//! `/api/v1/api-keys`: a user's own API keys (access token only: a key
//! cannot mint keys).

use crate::app::AppState;
use crate::auth::now;
use crate::http::caller::Authenticated;
use crate::http::error::ApiError;
use crate::http::extract::{Json, Path};
use crate::http::users::{Items, rfc3339};
use crate::store::ApiKey;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Deserialize)]
pub struct CreateBody {
    name: String,
    scopes: Vec<String>,
    expires_in: Option<i64>,
}

fn view(key: &ApiKey) -> Value {
    json!({
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": key.scopes,
        "created_at": rfc3339(key.created_at),
        "expires_at": key.expires_at.map(rfc3339),
    })
}

pub async fn create(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Json(body): Json<CreateBody>,
) -> Result<impl IntoResponse, ApiError> {
    let created = state
        .api_keys()
        .create(claims.sub, &body.name, &body.scopes, body.expires_in, now())
        .await?;
    let mut body = view(&created.stored);
    body["key"] = Value::String(created.key);
    Ok((
        StatusCode::CREATED,
        [("cache-control", "no-store")],
        axum::Json(body),
    ))
}

pub async fn list(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
) -> Result<axum::Json<Items<Value>>, ApiError> {
    let keys = state.api_keys().list(claims.sub).await?;
    Ok(axum::Json(Items {
        items: keys.iter().map(view).collect(),
    }))
}

pub async fn delete(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    state.api_keys().delete(claims.sub, id, now()).await?;
    Ok(StatusCode::NO_CONTENT)
}
