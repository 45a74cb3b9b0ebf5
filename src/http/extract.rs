//! Extractors that fail in the contract's format: a JSON body whose
//! rejections become REQ001/REQ002 (never axum's plain-text defaults), the
//! Bearer-authenticated caller, and the client's address and user agent.

use crate::app::AppState;
use crate::auth::sessions::Client;
use crate::auth::tokens::AccessClaims;
use crate::error::ApiError;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use serde::de::DeserializeOwned;
use std::net::SocketAddr;

/// A JSON body; any rejection is an `ApiError`.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
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

/// The caller, proven by a valid access token. Verification is in memory.
pub struct Authenticated(pub AccessClaims);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::MissingCredentials)?;
        let text = value.to_str().map_err(|_| ApiError::TokenInvalid)?;
        let (scheme, token) = text.split_once(' ').ok_or(ApiError::TokenInvalid)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::MissingCredentials);
        }
        state
            .tokens
            .verify(token.trim(), crate::auth::now())
            .map(Authenticated)
    }
}

/// Peer address and user agent, recorded on new sessions.
pub struct ClientInfo(pub Client);

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(ClientInfo(Client { ip, user_agent }))
    }
}
