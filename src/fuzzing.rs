//! The entry points of the fuzz targets (fuzz/, `cargo fuzz`): thin
//! wrappers over parsers that are private to their modules, gathered here
//! so the surface opened for fuzzing is one marked place and not a `pub`
//! scattered over the domain. Nothing in the service calls this module.

use crate::auth::accounts::{Registration, check_registration};
use crate::auth::keys::KeyError;
use crate::auth::master_key::MasterKey;
use crate::auth::policy::PasswordPolicy;
use crate::config::{Config, ConfigError};
use crate::http::auth::{LoginBody, RefreshBody, RegisterBody};
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::store::{StoredKey, UnixTime};
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;
use std::net::IpAddr;
use uuid::Uuid;

pub use ipnet::IpNet;

/// `<session id>.<secret>` → (session id, hash of the secret).
pub fn parse_refresh_token(token: &str) -> Result<(Uuid, String), ApiError> {
    crate::auth::sessions::parse_refresh_token(token).map_err(ApiError::from)
}

/// `hf_<prefix>_<secret>` → the prefix the key is looked up by.
pub fn parse_api_key(key: &str) -> Option<&str> {
    crate::auth::api_keys::parse(key)
}

/// The client address of a request from `peer` carrying these
/// `X-Forwarded-For` values (raw bytes, as the header values arrive), and
/// the key its per-address limits count under.
pub fn client_ip(
    peer: Option<IpAddr>,
    forwarded: &[&[u8]],
    trusted: &[IpNet],
) -> Option<(IpAddr, String)> {
    let ip = crate::http::client_address::client_ip(peer?, forwarded, trusted);
    Some((ip, crate::http::client_address::rate_key(ip)))
}

/// A configuration file's text over the defaults, validated.
pub fn config_from_toml(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text)
}

/// A signing key as the store keeps it, for a fixed Ed25519 private key
/// (PKCS#8), so a fuzz corpus's tokens stay valid from run to run.
pub fn stored_key(master: &MasterKey, pkcs8: &[u8], now: UnixTime) -> Result<StoredKey, KeyError> {
    crate::auth::keys::from_pkcs8(master, pkcs8, now, now)
}

/// The status an error is answered with (builds the whole response).
pub fn status_of(error: ApiError) -> StatusCode {
    error.into_response().status()
}

/// A JSON body through the handlers' own extractor.
fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut request = Request::new(Body::from(bytes.to_vec()));
    request.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    futures::executor::block_on(Json::<T>::from_request(request, &())).map(|Json(value)| value)
}

/// A register body, parsed and checked as `POST /auth/register` does before
/// it touches a store: the email and username as they would be stored.
pub fn register_body(bytes: &[u8], policy: &PasswordPolicy) -> Result<(String, String), ApiError> {
    let b: RegisterBody = body(bytes)?;
    Ok(check_registration(
        policy,
        &Registration {
            email: b.email,
            username: b.username,
            password: b.password,
            roles: Vec::new(),
        },
    )?)
}

/// A login body, parsed as `POST /auth/login` does: the login as the
/// per-account limiter keys an unknown name, and the password.
pub fn login_body(bytes: &[u8]) -> Result<(String, String), ApiError> {
    let b: LoginBody = body(bytes)?;
    Ok((b.login.trim().to_lowercase(), b.password))
}

/// A refresh body, parsed as `POST /auth/refresh` does, down to the token.
pub fn refresh_body(bytes: &[u8]) -> Result<(Uuid, String), ApiError> {
    let b: RefreshBody = body(bytes)?;
    parse_refresh_token(&b.refresh_token)
}
