//! `GET /api/v1/admin/audit`: the security events, filtered by kind, user
//! and time, oldest first, a page at a time (`next_cursor` → `cursor`).

use crate::app::AppState;
use crate::http::admin_schemas::AuditEventView;
use crate::http::caller::Admin;
use crate::http::error::{ApiError, FieldError};
use crate::http::extract::Query;
use crate::http::openapi::{
    BadRequest, Forbidden, PayloadTooLarge, ServiceUnavailable, TooManyRequests, Unauthorized,
    Unprocessable,
};
use crate::http::users::rfc3339;
use crate::store::{AuditEvent, AuditFilter};
use axum::extract::State;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// The longest page.
const MAX_LIMIT: i64 = 1000;

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// RFC 3339 or Unix seconds; default: 24 hours ago.
    since: Option<String>,
    /// RFC 3339 or Unix seconds, exclusive; default: none.
    until: Option<String>,
    /// An event kind, e.g. `login_failed`.
    kind: Option<String>,
    /// A user id (UUID).
    user_id: Option<String>,
    /// 1 to 1000; default 100.
    limit: Option<i64>,
    /// `next_cursor` of the page before.
    cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    #[schema(value_type = Vec<AuditEventView>)]
    items: Vec<Value>,
    /// Set when the page is full: pass it as `cursor` for the next one.
    next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/audit",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of security events, oldest first", body = AuditPage),
        BadRequest, Unauthorized, Forbidden, PayloadTooLarge, Unprocessable, TooManyRequests,
        ServiceUnavailable,
    )
)]
pub async fn audit(
    _: Admin,
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<axum::Json<AuditPage>, ApiError> {
    let filter = filter(q)?;
    let events = state.audit().query(&filter).await?;
    let next_cursor = (events.len() as i64 == filter.limit)
        .then(|| events.last().map(|e| e.id.to_string()))
        .flatten();
    let items = events.into_iter().map(item).collect();
    Ok(axum::Json(AuditPage { items, next_cursor }))
}

fn item(e: AuditEvent) -> Value {
    serde_json::json!({
        "id": e.id,
        "at": rfc3339(e.at),
        "kind": e.kind,
        "user_id": e.user_id,
        "detail": e.detail,
    })
}

/// The query as a filter, or every field that is wrong (422 VAL001).
fn filter(q: AuditQuery) -> Result<AuditFilter, ApiError> {
    let mut wrong = Vec::new();
    let mut bad = |field: &'static str, message: &'static str| {
        wrong.push(FieldError::new(field, message));
    };
    let time = "must be an RFC 3339 time or Unix seconds";
    let since = match q.since.as_deref().map(parse_time) {
        None => crate::auth::now() - 24 * 3600,
        Some(Some(t)) => t,
        Some(None) => {
            bad("since", time);
            0
        }
    };
    let until = q.until.as_deref().map(parse_time);
    if let Some(None) = until {
        bad("until", time);
    }
    let kind = q.kind.filter(|k| !k.is_empty());
    if kind.as_deref().is_some_and(|k| !is_kind(k)) {
        bad("kind", "must be an event kind like login_failed");
    }
    let user_id = q.user_id.as_deref().map(Uuid::parse_str);
    if let Some(Err(_)) = user_id {
        bad("user_id", "must be a UUID");
    }
    let after = q
        .cursor
        .as_deref()
        .map(|c| c.parse::<i64>().ok().filter(|n| *n >= 0));
    if let Some(None) = after {
        bad("cursor", "must be a next_cursor this endpoint returned");
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        bad("limit", "must be from 1 to 1000");
    }
    if !wrong.is_empty() {
        return Err(ApiError::Validation(wrong));
    }
    Ok(AuditFilter {
        since,
        until: until.flatten(),
        kind,
        user_id: user_id.and_then(Result::ok),
        after: after.flatten(),
        limit,
    })
}

fn is_kind(kind: &str) -> bool {
    kind.len() <= 64 && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

fn parse_time(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().or_else(|| {
        OffsetDateTime::parse(text, &Rfc3339)
            .ok()
            .map(|t| t.unix_timestamp())
    })
}
