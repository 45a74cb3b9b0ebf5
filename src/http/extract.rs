//! Extractors that fail in the contract's format: a JSON body whose
//! rejections become REQ001/REQ002 (never axum's plain-text defaults), and
//! the client's address and user agent. Who the caller is lives in
//! `caller.rs`.

use crate::app::AppState;
use crate::auth::sessions::Client;
use crate::error::ApiError;
use crate::http::{BODY_LIMIT, client_address};
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use serde::de::DeserializeOwned;
use std::net::SocketAddr;

/// The request with its body capped at `BODY_LIMIT`: reading past it
/// fails, and axum's body extractors answer that as 413 (REQ002 here).
/// Every extractor that reads a body calls this. It is not a router layer
/// (`DefaultBodyLimit`) because a layer costs every request, bodiless
/// verifications included, one more request extension.
pub fn limited(req: Request) -> Request {
    req.map(|body| Body::new(http_body_util::Limited::new(body, BODY_LIMIT)))
}

/// A JSON body; any rejection is an `ApiError`.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(limited(req), state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge)
            }
            Err(rejection) => Err(ApiError::Malformed(rejection.body_text())),
        }
    }
}

/// A JSON body that may be absent (no bytes at all).
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
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| OptionalJson(Some(v)))
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

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let ip = peer.map(|peer| {
            let forwarded: Vec<&[u8]> = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            client_address::client_ip(peer, &forwarded, &state.config.trusted_proxies)
        });
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(ClientInfo {
            rate_key: ip.map_or_else(|| "unknown".to_string(), client_address::rate_key),
            client: Client {
                ip: ip.map(|ip| ip.to_string()),
                user_agent,
            },
        })
    }
}
