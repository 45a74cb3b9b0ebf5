//! Extractors that fail in the contract's format: a JSON body, a query
//! string and path parameters whose rejections become REQ001/REQ002 (never
//! axum's plain-text defaults), and
//! the client's address and user agent. Who the caller is lives in
//! `caller.rs`.

use crate::app::AppState;
use crate::auth::sessions::Client;
use crate::http::error::ApiError;
use crate::http::{BODY_LIMIT, client_address};
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::net::SocketAddr;

/// The request with its body capped at `BODY_LIMIT`: reading past it
/// fails, and axum's body extractors answer that as 413 (REQ002 here).
/// Every extractor that reads a body calls this. It is not a router layer
/// (`DefaultBodyLimit`) because a layer costs every request, bodiless
/// verifications included, one more request extension.
pub fn limited(req: Request) -> Request {
    req.map(|body| Body::new(http_body_util::Limited::new(body, BODY_LIMIT)))
}

/// A JSON body; any rejection is an `ApiError`. A string holding NUL
/// (`\u0000`) anywhere in the document is refused here, once, as 400
/// REQ001: no field of this API can hold one, PostgreSQL `text` cannot
/// store one (it would fail as a 500 deep in a store), and C-string
/// consumers downstream would truncate at it. It is malformed input rather
/// than a validation failure of one field, so it needs no field list.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Through a `Value` so that every string, however deeply nested or
        // ignored by `T`, is seen by the NUL check.
        let value = match axum::Json::<Value>::from_request(limited(req), state).await {
            Ok(axum::Json(value)) => value,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::PayloadTooLarge);
            }
            Err(rejection) => return Err(ApiError::Malformed(rejection.body_text())),
        };
        if holds_nul(&value) {
            return Err(nul());
        }
        serde_json::from_value(value)
            .map(Json)
            .map_err(|e| ApiError::Malformed(format!("invalid JSON body: {e}")))
    }
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

fn nul() -> ApiError {
    ApiError::Malformed("NUL characters are not accepted".into())
}

/// Refuses a form or path value holding NUL, like `Json` does.
pub fn refuse_nul(text: &str) -> Result<(), ApiError> {
    if text.contains('\0') {
        Err(nul())
    } else {
        Ok(())
    }
}

/// A percent-encoded NUL in a raw path or query. In valid percent-encoding
/// every `%` starts an escape, so `%00` can only be one.
fn encodes_nul(raw: &str) -> bool {
    raw.contains("%00")
}

/// Query strings past this are refused with 413 REQ002 (the contract's
/// "too large"): no query parameter of this API needs more, and a URI as
/// long as a body would pass it to the stores whole.
pub const QUERY_LIMIT: usize = 8 * 1024;

/// A query string; malformed ones are 400 REQ001 in the contract's format
/// (axum's own rejection is plain text), NUL is refused like in `Json`,
/// and one longer than `QUERY_LIMIT` is 413 REQ002.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or("");
        if raw.len() > QUERY_LIMIT {
            return Err(ApiError::PayloadTooLarge);
        }
        if encodes_nul(raw) {
            return Err(nul());
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| Query(q))
            .map_err(|e| ApiError::Malformed(e.body_text()))
    }
}

/// Path parameters; a segment that is not valid percent-encoded UTF-8 or
/// does not fit the type is 400 REQ001 in the contract's format.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if encodes_nul(parts.uri.path()) {
            return Err(nul());
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(p)| Path(p))
            .map_err(|e| ApiError::Malformed(e.body_text()))
    }
}

/// A JSON body that may be absent (no bytes at all) or `null`.
pub struct OptionalJson<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let has_body = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v != "0")
            || req.headers().contains_key(header::TRANSFER_ENCODING);
        if !has_body {
            return Ok(OptionalJson(None));
        }
        Json::<Option<T>>::from_request(req, state)
            .await
            .map(|Json(v)| OptionalJson(v))
    }
}

/// The client as this request shows it: its address (kept on sessions and
/// in the audit log, in full) and the key its per-IP limits count under
/// (`client_address::rate_key`: an IPv6 client's /64). Every per-IP limit
/// takes `rate_key`, so a client cannot leave its bucket by rotating the
/// low bits of an IPv6 address.
pub struct ClientInfo {
    pub client: Client,
    pub rate_key: String,
}

/// The client's address (`None` without a peer, as in a router test).
fn client_ip_of(parts: &Parts, state: &AppState) -> Option<std::net::IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())?;
    let forwarded: Vec<&[u8]> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    Some(client_address::client_ip(
        peer,
        &forwarded,
        &state.config().trusted_proxies,
    ))
}

/// The key the client's per-address limits count under (an IPv6
/// client's /64), for extractors that need no `ClientInfo`.
pub fn client_address(parts: &Parts, state: &AppState) -> Option<String> {
    client_ip_of(parts, state).map(client_address::rate_key)
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ip = client_ip_of(parts, state);
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(ClientInfo {
            rate_key: ip.map_or_else(|| "unknown".to_string(), client_address::rate_key),
            client: Client {
                ip: ip.map(|ip| ip.to_string()),
                rate_key: ip.map(client_address::rate_key),
                user_agent,
            },
        })
    }
}
