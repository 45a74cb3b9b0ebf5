//! Who is calling. Every credential the contract accepts is recognised
//! here, once, and each route states what it takes:
//!
//! - `Authenticated`: a user's access token (`Authorization: Bearer`);
//! - `Account`: a user acting on their own account (access token, or an API
//!   key with scope `users`);
//! - `Admin`: role `admin`, an API key with scope `admin`, or an emergency
//!   token with scope `admin`;
//! - `Credential`: anything `/auth/verify` accepts, external tokens too.

use crate::app::AppState;
use crate::auth::api_keys::ApiKeyPrincipal;
use crate::auth::emergency::{self, EmergencyClaims};
use crate::auth::external::ExternalIdentity;
use crate::auth::rbac::ADMIN_ROLE;
use crate::auth::tokens::AccessClaims;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use std::sync::Arc;
use uuid::Uuid;

/// The token of `Authorization: Bearer <token>`.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::MissingCredentials)?;
    let text = value.to_str().map_err(|_| ApiError::TokenInvalid)?;
    let (scheme, token) = text.split_once(' ').ok_or(ApiError::TokenInvalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::MissingCredentials);
    }
    Ok(token.trim())
}

/// The key of `X-API-Key: <key>` or `Authorization: ApiKey <key>`.
fn api_key(parts: &Parts) -> Result<Option<&str>, ApiError> {
    if let Some(value) = parts.headers.get("x-api-key") {
        return value.to_str().map(Some).map_err(|_| ApiError::TokenInvalid);
    }
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| ApiError::TokenInvalid)?;
    Ok(text
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("apikey"))
        .map(|(_, key)| key.trim()))
}

/// A user's access token; nothing else.
pub struct Authenticated(pub Arc<AccessClaims>);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state
            .tokens
            .verify(bearer(parts)?, crate::auth::now())
            .map(Authenticated)
    }
}

/// Any credential `/auth/verify` accepts.
pub enum Credential {
    User(Arc<AccessClaims>),
    ApiKey(Arc<ApiKeyPrincipal>),
    Emergency(EmergencyClaims),
    External(ExternalIdentity),
}

impl FromRequestParts<AppState> for Credential {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let now = crate::auth::now();
        if let Some(key) = api_key(parts)? {
            return state
                .api_keys
                .authenticate(key, now)
                .await
                .map(Credential::ApiKey);
        }
        resolve_token(state, bearer(parts)?, now).await
    }
}

/// What a bearer token is and who it proves: one of our access tokens, an
/// emergency token (by its `kid`), or a configured upstream issuer's token.
pub async fn resolve_token(
    state: &AppState,
    token: &str,
    now: crate::store::UnixTime,
) -> Result<Credential, ApiError> {
    if let Some(result) = state.tokens.verify_cached(token, now) {
        return result.map(Credential::User);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| ApiError::TokenInvalid)?;
    let kid = header.kid.as_deref().unwrap_or_default();
    if kid == emergency::KID {
        let verifier = state.emergency.as_ref().ok_or(ApiError::TokenInvalid)?;
        let claims = verifier.verify(token, now)?;
        state.audit.record(
            "emergency_token_used",
            None,
            serde_json::json!({"jti": claims.jti, "sub": claims.sub, "reason": claims.reason}),
        );
        return Ok(Credential::Emergency(claims));
    }
    // Only when upstream issuers are configured (`for_token` is `None`
    // otherwise): no key-ring lookup on the common path.
    if let Some(idp) = state.external.for_token(token)
        && !state.keys.snapshot().verifying.contains_key(kid)
    {
        return idp.verify(token, &header).await.map(Credential::External);
    }
    state
        .tokens
        .verify_with_header(token, header, now)
        .map(Credential::User)
}

/// A user acting on their own account.
pub struct Account {
    pub user_id: Uuid,
    /// The session of an access token; `None` for an API key.
    pub session: Option<Uuid>,
}

impl FromRequestParts<AppState> for Account {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Credential::from_request_parts(parts, state).await? {
            Credential::User(claims) => Ok(Account {
                user_id: claims.sub,
                session: Some(claims.sid),
            }),
            Credential::ApiKey(key) if key.has_scope("users") => Ok(Account {
                user_id: key.user_id,
                session: None,
            }),
            _ => Err(ApiError::Forbidden),
        }
    }
}

/// An operator. Anyone else authenticated is AUTH005.
pub struct Admin {
    /// Who, for the audit log: a user id, `api_key:<prefix>` or
    /// `emergency:<jti>`.
    pub actor: String,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let actor = match Credential::from_request_parts(parts, state).await? {
            Credential::User(claims) if claims.roles.iter().any(|r| r == ADMIN_ROLE) => {
                claims.sub.to_string()
            }
            Credential::ApiKey(key) if key.has_scope("admin") => {
                format!("api_key:{}", key.prefix)
            }
            Credential::Emergency(claims) if claims.scope.iter().any(|s| s == "admin") => {
                format!("emergency:{}", claims.jti)
            }
            _ => return Err(ApiError::Forbidden),
        };
        Ok(Admin { actor })
    }
}
