//! Who is calling. Every credential the contract accepts is recognised
//! here, once, and each route states what it takes:
//!
//! - `Authenticated`: a user's access token (`Authorization: Bearer`);
//! - `Account`: a user acting on their own account (access token, or an API
//!   key with scope `users`);
//! - `OwnSession`: a user acting on their own account through their own
//!   session (access token only): password change and account deletion,
//!   which a leaked API key must not be able to do;
//! - `Admin`: role `admin`, an API key with scope `admin`, or an emergency
//!   token with scope `admin`;
//! - `Credential`: anything `/auth/verify` accepts, external tokens too.

use crate::app::AppState;
use crate::auth::api_keys::ApiKeyPrincipal;
use crate::auth::claims::AccessClaims;
use crate::auth::emergency::{self, EmergencyClaims};
use crate::auth::external::ExternalIdentity;
use crate::auth::rbac::ADMIN_ROLE;
use crate::http::auth_outcomes::{self, AuthMethod};
use crate::http::error::ApiError;
use crate::http::extract::client_address;
use axum::extract::FromRequestParts;
use axum::http::{HeaderName, header, request::Parts};
use std::sync::Arc;
use uuid::Uuid;

/// `Authorization: <scheme> <credentials>` split at the first space, the
/// credentials not yet checked: `HeaderValue::to_str` checks byte by byte
/// (about 1,000 instructions on a 500-byte token, and this runs twice per
/// verification), so only the credentials a caller takes are checked, by
/// the vectorised `str::from_utf8`. `None` without a header; `Some(None)`
/// for a value with no space.
fn authorization(parts: &Parts) -> Option<Option<(&[u8], &[u8])>> {
    let value = parts.headers.get(header::AUTHORIZATION)?.as_bytes();
    let space = value.iter().position(|&b| b == b' ');
    Some(space.map(|at| (&value[..at], &value[at + 1..])))
}

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

fn credentials(bytes: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(bytes)
        .map(str::trim)
        .map_err(|_| ApiError::TokenInvalid)
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let (scheme, token) = authorization(parts)
        .ok_or(ApiError::MissingCredentials)?
        .ok_or(ApiError::TokenInvalid)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(ApiError::MissingCredentials);
    }
    credentials(token)
}

/// The key of `X-API-Key: <key>` or `Authorization: ApiKey <key>`.
fn api_key(parts: &Parts) -> Result<Option<&str>, ApiError> {
    if let Some(value) = parts.headers.get(X_API_KEY) {
        return credentials(value.as_bytes()).map(Some);
    }
    match authorization(parts).flatten() {
        Some((scheme, key)) if scheme.eq_ignore_ascii_case(b"apikey") => credentials(key).map(Some),
        _ => Ok(None),
    }
}

/// A user's access token; nothing else.
pub struct Authenticated(pub Arc<AccessClaims>);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims =
            bearer(parts).and_then(|token| Ok(state.tokens().verify(token, crate::auth::now())?));
        auth_outcomes::record(AuthMethod::Jwt, &claims);
        Ok(Authenticated(claims?))
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
            // Boxed, like the upstream fetch below: a store lookup's
            // future is large and a bearer token never needs it.
            let address = client_address(parts, state);
            let address = address.as_deref().unwrap_or("unknown");
            let key = Box::pin(state.api_keys().authenticate(key, address, now))
                .await
                .map(Credential::ApiKey)
                .map_err(ApiError::from);
            auth_outcomes::record(AuthMethod::ApiKey, &key);
            return key;
        }
        resolve_token(state, bearer(parts)?, now).await
    }
}

/// What a bearer token is and who it proves: one of our access tokens, an
/// emergency token (by its `kid`), or a configured upstream issuer's token.
/// Each is counted in `holdfast_auth_outcomes_total`.
pub async fn resolve_token(
    state: &AppState,
    token: &str,
    now: crate::store::UnixTime,
) -> Result<Credential, ApiError> {
    let (method, credential) = resolve(state, token, now).await;
    auth_outcomes::record(method, &credential);
    credential
}

async fn resolve(
    state: &AppState,
    token: &str,
    now: crate::store::UnixTime,
) -> (AuthMethod, Result<Credential, ApiError>) {
    if let Some(result) = state.tokens().verify_cached(token, now) {
        return (AuthMethod::Jwt, user(result));
    }
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return (AuthMethod::Jwt, Err(ApiError::TokenInvalid));
    };
    let kid = header.kid.as_deref().unwrap_or_default();
    if kid == emergency::KID {
        let Some(verifier) = state.emergency() else {
            // Never silent: whoever sends one is in an emergency.
            tracing::warn!("emergency token refused: emergency tokens are off on this node");
            return (AuthMethod::Emergency, Err(ApiError::TokenInvalid));
        };
        let claims = verifier.admit(token, now, state.audit());
        let claims = claims.map(Credential::Emergency).map_err(ApiError::from);
        return (AuthMethod::Emergency, claims);
    }
    // Only when upstream issuers are configured (`for_token` is `None`
    // otherwise): no key-ring lookup on the common path.
    if let Some(idp) = state.external().for_token(token)
        && !state.keys().verifies(kid)
    {
        // Boxed: the upstream fetch makes this future ~3 KB, which every
        // verification's future would otherwise carry and copy.
        let identity = Box::pin(idp.verify(token, &header)).await;
        let identity = identity.map(Credential::External).map_err(ApiError::from);
        return (AuthMethod::External, identity);
    }
    let claims = state.tokens().verify_with_header(token, header, now);
    (AuthMethod::Jwt, user(claims))
}

fn user(
    claims: Result<Arc<AccessClaims>, crate::auth::error::AuthError>,
) -> Result<Credential, ApiError> {
    claims.map(Credential::User).map_err(ApiError::from)
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

/// A user in their own session: an access token, never an API key (nor an
/// emergency or upstream token). Anyone else authenticated is AUTH005.
pub struct OwnSession {
    pub user_id: Uuid,
    pub session: Uuid,
}

impl FromRequestParts<AppState> for OwnSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Credential::from_request_parts(parts, state).await? {
            Credential::User(claims) => Ok(OwnSession {
                user_id: claims.sub,
                session: claims.sid,
            }),
            _ => Err(ApiError::ForbiddenBecause(
                "this needs your own session (Bearer), not an API key".into(),
            )),
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
