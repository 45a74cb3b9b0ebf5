//! `holdfast_auth_outcomes_total{method,code}` (DESIGN.md §3): each
//! authentication's result, by how the caller authenticated and the
//! contract's code of the answer (`ok`, or `AUTH002`, `SVC001`…). Counted
//! at the HTTP edge, where the code is chosen; a request that carries no
//! credential at all is not an authentication and is not counted.

use crate::http::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// One of our access tokens.
    Jwt,
    ApiKey,
    /// A break-glass token.
    Emergency,
    /// An upstream issuer's token (`[[idp]]`).
    External,
    /// A login with a password.
    Password,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Jwt => "jwt",
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Emergency => "emergency",
            AuthMethod::External => "external",
            AuthMethod::Password => "password",
        }
    }
}

/// Counts one authentication's result.
pub fn record<T>(method: AuthMethod, result: &Result<T, ApiError>) {
    let code = match result {
        Ok(_) => "ok",
        Err(ApiError::MissingCredentials) => return,
        Err(e) => e.code(),
    };
    metrics::counter!(
        "holdfast_auth_outcomes_total",
        "method" => method.as_str(),
        "code" => code
    )
    .increment(1);
}
