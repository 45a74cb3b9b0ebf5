//! `POST /api/v1/authz/check`: may this user do this? Answered from the
//! decision cache when fresh, live otherwise, stale (and marked so) when
//! the database cannot answer.

use crate::app::AppState;
use crate::auth::rbac::ADMIN_ROLE;
use crate::http::caller::Credential;
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::http::openapi::{
    BadRequest, Forbidden, PayloadTooLarge, ServiceUnavailable, TooManyRequests, Unauthorized,
    Unprocessable,
};
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Deserialize, ToSchema)]
pub struct CheckBody {
    /// `resource:action`.
    permission: String,
    /// Another user: admins and API keys with scope `authz` only.
    user_id: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
pub struct Decision {
    allowed: bool,
    /// `live` or `cache`.
    #[schema(value_type = DecisionSource)]
    source: &'static str,
    /// Served from the cache past its TTL because the database could not
    /// answer.
    stale: bool,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum DecisionSource {
    Live,
    Cache,
}

#[utoipa::path(
    post,
    path = "/api/v1/authz/check",
    operation_id = "check_permission",
    tag = "authz",
    security(("bearer" = []), ("api_key" = [])),
    request_body = CheckBody,
    responses(
        (status = 200, description = "The decision", body = Decision),
        BadRequest, Unauthorized, Forbidden, PayloadTooLarge, Unprocessable, TooManyRequests,
        ServiceUnavailable,
    )
)]
pub async fn check(
    State(state): State<AppState>,
    credential: Credential,
    Json(body): Json<CheckBody>,
) -> Result<axum::Json<Decision>, ApiError> {
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
    Ok(axum::Json(Decision {
        allowed: answer.allowed,
        source: answer.source.as_str(),
        stale: answer.stale,
    }))
}
