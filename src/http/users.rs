//! `/api/v1/users/me*`: the caller's own account and sessions.

use crate::app::AppState;
use crate::auth::now;
use crate::http::caller::{Account, OwnSession};
use crate::http::error::ApiError;
use crate::http::extract::{ClientInfo, Json, Path};
use crate::http::openapi::{
    BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, ServiceUnavailable,
    TooManyRequests, Unauthorized, Unprocessable,
};
use crate::store::{Session, User};
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;
use uuid::Uuid;

/// The public shape of a user: never the password hash.
#[derive(Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserView {
    id: Uuid,
    email: String,
    username: String,
    roles: Vec<String>,
    #[schema(value_type = UserStatus)]
    status: &'static str,
    #[schema(format = DateTime)]
    created_at: String,
}

/// `active`, or `disabled` (deleted by its owner or disabled by an admin).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Disabled,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            email: u.email,
            username: u.username,
            roles: u.roles,
            status: u.status.as_str(),
            created_at: rfc3339(u.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Session)]
pub struct SessionView {
    id: Uuid,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    last_used_at: String,
    user_agent: Option<String>,
    ip: Option<String>,
    /// Whether this is the session of the calling token.
    current: bool,
}

/// Every list: `{"items": [...]}`.
#[derive(Serialize, ToSchema)]
pub struct Items<T> {
    pub items: Vec<T>,
}

#[derive(Deserialize, ToSchema)]
pub struct ProfileBody {
    email: Option<String>,
    username: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct PasswordBody {
    current_password: String,
    new_password: String,
}

pub fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[utoipa::path(
    get,
    path = "/api/v1/users/me",
    tag = "users",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The caller's account", body = UserView),
        Unauthorized, Forbidden, NotFound, TooManyRequests, ServiceUnavailable,
    )
)]
pub async fn me(
    State(state): State<AppState>,
    caller: Account,
) -> Result<axum::Json<UserView>, ApiError> {
    let user = state.accounts().current(caller.user_id).await?;
    Ok(axum::Json(user.into()))
}

#[utoipa::path(
    put,
    path = "/api/v1/users/me",
    tag = "users",
    security(("bearer" = []), ("api_key" = [])),
    request_body = ProfileBody,
    responses(
        (status = 200, description = "The updated account", body = UserView),
        BadRequest, Unauthorized, Forbidden, NotFound, Conflict, PayloadTooLarge, Unprocessable,
        TooManyRequests, ServiceUnavailable,
    )
)]
pub async fn update_me(
    State(state): State<AppState>,
    caller: Account,
    Json(body): Json<ProfileBody>,
) -> Result<axum::Json<UserView>, ApiError> {
    let user = state
        .accounts()
        .update_profile(caller.user_id, body.email, body.username, now())
        .await?;
    Ok(axum::Json(user.into()))
}

/// Every other session of the user is revoked. A wrong `current_password`
/// counts like a failed login (429 once locked).
#[utoipa::path(
    patch,
    path = "/api/v1/users/me/password",
    tag = "users",
    security(("bearer" = [])),
    request_body = PasswordBody,
    responses(
        (status = 204, description = "Password changed"),
        BadRequest, Unauthorized, Forbidden, NotFound, PayloadTooLarge, Unprocessable,
        TooManyRequests, ServiceUnavailable,
    )
)]
pub async fn change_password(
    State(state): State<AppState>,
    caller: OwnSession,
    ClientInfo { rate_key, .. }: ClientInfo,
    Json(body): Json<PasswordBody>,
) -> Result<StatusCode, ApiError> {
    state
        .accounts()
        .change_password(
            caller.user_id,
            caller.session,
            &rate_key,
            body.current_password,
            body.new_password,
            now(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Soft delete: the account is disabled and every session and token of
/// the user stops working at once.
#[utoipa::path(
    delete,
    path = "/api/v1/users/me",
    tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Account disabled"),
        Unauthorized, Forbidden, NotFound, ServiceUnavailable,
    )
)]
pub async fn delete_me(
    State(state): State<AppState>,
    caller: OwnSession,
) -> Result<StatusCode, ApiError> {
    state
        .accounts()
        .disable(caller.user_id, "self", now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/v1/users/me/sessions",
    tag = "users",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The user's live sessions", body = Items<SessionView>),
        Unauthorized, Forbidden, TooManyRequests, ServiceUnavailable,
    )
)]
pub async fn sessions(
    State(state): State<AppState>,
    caller: Account,
) -> Result<axum::Json<Items<SessionView>>, ApiError> {
    let sessions = state.sessions().list(caller.user_id, now()).await?;
    let items = sessions
        .into_iter()
        .map(|s: Session| SessionView {
            current: Some(s.id) == caller.session,
            id: s.id,
            created_at: rfc3339(s.created_at),
            last_used_at: rfc3339(s.last_used_at),
            user_agent: s.user_agent,
            ip: s.ip,
        })
        .collect();
    Ok(axum::Json(Items { items }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/users/me/sessions/{id}",
    tag = "users",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "A session id (UUID); anything else is 404")),
    responses(
        (status = 204, description = "Session revoked"),
        BadRequest, Unauthorized, Forbidden, NotFound, TooManyRequests, ServiceUnavailable,
    )
)]
pub async fn delete_session(
    State(state): State<AppState>,
    caller: Account,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    state.sessions().delete(caller.user_id, id, now()).await?;
    Ok(StatusCode::NO_CONTENT)
}
