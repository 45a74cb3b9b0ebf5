//! Extractors that fail in the contract's format: a JSON body whose
//! rejections become REQ001/REQ002 (never axum's plain-text defaults), and
//! the client's address and user agent. Who the caller is lives in
//! `caller.rs`.

use crate::app::AppState;
use crate::auth::sessions::Client;
use crate::error::ApiError;
use crate::http::BODY_LIMIT;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};

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

/// The client's address and user agent: for per-IP limits and the session
/// list. The address is the TCP peer, unless the peer is a trusted proxy:
/// then the right-most `X-Forwarded-For` entry that is not itself a trusted
/// proxy (entries further left are the client's own claims).
pub struct ClientInfo(pub Client);

pub(crate) fn client_ip(
    peer: Option<IpAddr>,
    headers: &axum::http::HeaderMap,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer?;
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .unwrap_or(peer),
    )
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let ip =
            client_ip(peer, &parts.headers, &state.config.trusted_proxies).map(|ip| ip.to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(ClientInfo(Client { ip, user_agent }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9, 10.0.0.2"),
        );
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        // From the balancer: the right-most untrusted hop, not the spoofable left.
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), &headers, &trusted),
            Some(ip("203.0.113.9"))
        );
        // From anyone else: the peer; the header is ignored.
        assert_eq!(
            client_ip(Some(ip("198.51.100.1")), &headers, &trusted),
            Some(ip("198.51.100.1"))
        );
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), &headers, &[]),
            Some(ip("10.0.0.1"))
        );
        // Only proxies in the header: the peer.
        let mut only = HeaderMap::new();
        only.insert("x-forwarded-for", HeaderValue::from_static("10.1.1.1"));
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), &only, &trusted),
            Some(ip("10.0.0.1"))
        );
    }
}
