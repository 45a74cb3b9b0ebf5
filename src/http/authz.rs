//! `POST /api/v1/authz/check`: may this user do this? Answered from the
//! decision cache when fresh, live otherwise, stale (and marked so) when
//! the database cannot answer.

use crate::app::AppState;
use crate::auth::rbac::ADMIN_ROLE;
use crate::http::caller::Credential;
use crate::http::error::ApiError;
use crate::http::extract::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Deserialize)]
pub struct CheckBody {
    permission: String,
    user_id: Option<Uuid>,
}

pub async fn check(
    State(state): State<AppState>,
    credential: Credential,
    Json(body): Json<CheckBody>,
) -> Result<axum::Json<Value>, ApiError> {
    // Whose permission: the caller's own, or (admins and API keys with
    // scope `authz` only) anyone's.
    let (own, may_ask_for_others) = match &credential {
        Credential::User(claims) => (claims.sub, claims.roles.iter().any(|r| r == ADMIN_ROLE)),
        Credential::ApiKey(key) if key.has_scope("authz") => (key.user_id, true),
        _ => return Err(ApiError::Forbidden),
    };
    let user = match body.user_id {
        Some(other) if other != own && !may_ask_for_others => {
            return Err(ApiError::Forbidden);
        }
        Some(other) => other,
        None => own,
    };
    let answer = state.rbac().check(user, body.permission.trim()).await?;
    Ok(axum::Json(json!({
        "allowed": answer.allowed,
        "source": answer.source.as_str(),
        "stale": answer.stale,
    })))
}
