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
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// The longest page.
const MAX_LIMIT: i64 = 1000;

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
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
    /// `next_cursor` of the page before; it carries that page's filters,
    /// so it is sent with `limit` alone.
    cursor: Option<String>,
}

/// What `next_cursor` carries: where the page ended and the filters it
/// was read with, so the next page cannot silently lose them.
#[derive(Serialize, serde::Deserialize)]
struct Cursor {
    after: i64,
    since: i64,
    until: Option<i64>,
    kind: Option<String>,
    user_id: Option<Uuid>,
}

impl Cursor {
    fn encode(filter: &AuditFilter, after: i64) -> Option<String> {
        let cursor = Cursor {
            after,
            since: filter.since,
            until: filter.until,
            kind: filter.kind.clone(),
            user_id: filter.user_id,
        };
        let json = serde_json::to_vec(&cursor).ok()?;
        Some(URL_SAFE_NO_PAD.encode(json))
    }

    fn decode(text: &str) -> Option<Self> {
        let json = URL_SAFE_NO_PAD.decode(text).ok()?;
        serde_json::from_slice::<Cursor>(&json)
            .ok()
            .filter(|c| c.after >= 0 && c.kind.as_deref().is_none_or(is_kind))
    }
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
        .then(|| events.last().and_then(|e| Cursor::encode(&filter, e.id)))
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
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        wrong.push(FieldError::new("limit", "must be from 1 to 1000"));
    }
    let filter = match q.cursor.as_deref() {
        Some(cursor) => from_cursor(cursor, &q, limit, &mut wrong),
        None => from_fields(q, limit, &mut wrong),
    };
    if !wrong.is_empty() {
        return Err(ApiError::Validation(wrong));
    }
    Ok(filter)
}

/// The next page: the filters are the cursor's; sending others with it is
/// an error, not a silent choice between the two.
fn from_cursor(
    cursor: &str,
    q: &AuditQuery,
    limit: i64,
    wrong: &mut Vec<FieldError>,
) -> AuditFilter {
    let filters = [&q.since, &q.until, &q.kind, &q.user_id];
    if filters.iter().any(|f| f.is_some()) {
        wrong.push(FieldError::new(
            "cursor",
            "carries the filters of its page: send it with limit alone",
        ));
    }
    let Some(c) = Cursor::decode(cursor) else {
        wrong.push(FieldError::new(
            "cursor",
            "must be a next_cursor this endpoint returned",
        ));
        return AuditFilter {
            since: 0,
            until: None,
            kind: None,
            user_id: None,
            after: None,
            limit,
        };
    };
    AuditFilter {
        since: c.since,
        until: c.until,
        kind: c.kind,
        user_id: c.user_id,
        after: Some(c.after),
        limit,
    }
}

fn from_fields(q: AuditQuery, limit: i64, wrong: &mut Vec<FieldError>) -> AuditFilter {
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
    if q.kind.as_deref().is_some_and(|k| !is_kind(k)) {
        bad("kind", "must be an event kind like login_failed");
    }
    let user_id = q.user_id.as_deref().map(Uuid::parse_str);
    if let Some(Err(_)) = user_id {
        bad("user_id", "must be a UUID");
    }
    AuditFilter {
        since,
        until: until.flatten(),
        kind: q.kind,
        user_id: user_id.and_then(Result::ok),
        after: None,
        limit,
    }
}

fn is_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 64
        && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

fn parse_time(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().or_else(|| {
        OffsetDateTime::parse(text, &Rfc3339)
            .ok()
            .map(|t| t.unix_timestamp())
    })
}
