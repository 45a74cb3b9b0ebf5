//! `/api/v1/users/me*`: the caller's own account and sessions.

use crate::app::AppState;
use crate::auth::now;
use crate::http::caller::{Account, OwnSession};
use crate::http::error::ApiError;
use crate::http::extract::{ClientInfo, Json, Path};
use crate::store::{Session, User};
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// The public shape of a user: never the password hash.
#[derive(Serialize)]
pub struct UserView {
    id: Uuid,
    email: String,
    username: String,
    roles: Vec<String>,
    status: &'static str,
    created_at: String,
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

#[derive(Serialize)]
pub struct SessionView {
    id: Uuid,
    created_at: String,
    last_used_at: String,
    user_agent: Option<String>,
    ip: Option<String>,
    current: bool,
}

#[derive(Serialize)]
pub struct Items<T> {
    pub items: Vec<T>,
}

#[derive(Deserialize)]
pub struct ProfileBody {
    email: Option<String>,
    username: Option<String>,
}

#[derive(Deserialize)]
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

pub async fn me(
    State(state): State<AppState>,
    caller: Account,
) -> Result<axum::Json<UserView>, ApiError> {
    let user = state.accounts().current(caller.user_id).await?;
    Ok(axum::Json(user.into()))
}

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

pub async fn delete_session(
    State(state): State<AppState>,
    caller: Account,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    state.sessions().delete(caller.user_id, id, now()).await?;
    Ok(StatusCode::NO_CONTENT)
}
