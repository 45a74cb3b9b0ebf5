//! The claims of an access token: what `tokens` signs and verifies and what
//! the validation cache keeps. A module of its own so that both depend on
//! it and neither on the other.

use crate::store::UnixTime;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The registered claims we issue (RFC 7519) plus the session id and roles.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: Uuid,
    pub aud: String,
    pub iat: UnixTime,
    pub nbf: UnixTime,
    pub exp: UnixTime,
    pub jti: Uuid,
    pub sid: Uuid,
    pub roles: Vec<String>,
}
