//! `holdfast_auth_outcomes_total{method,code}` (DESIGN.md §3): each
//! authentication's result, by how the caller authenticated and the
//! contract's code of the answer (`ok`, or `AUTH002`, `SVC001`…). Counted
//! at the HTTP edge, where the code is chosen; a request that carries no
//! credential at all is not an authentication and is not counted.

use crate::http::error::ApiError;
use metrics::Counter;
use std::cell::RefCell;
use std::collections::HashMap;

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

/// Method and code: both ours, few and fixed, so a fast hash is safe.
type ByOutcome = HashMap<(&'static str, &'static str), Counter, foldhash::fast::RandomState>;

thread_local! {
    /// Per worker thread, like the HTTP series' handles
    /// (`middleware::metrics`): a labelled key built and looked up per
    /// verification would cost more than a validation-cache hit.
    static HANDLES: RefCell<ByOutcome> = RefCell::new(HashMap::default());
}

/// Counts one authentication's result.
pub fn record<T>(method: AuthMethod, result: &Result<T, ApiError>) {
    let code = match result {
        Ok(_) => "ok",
        Err(ApiError::MissingCredentials) => return,
        Err(e) => e.code(),
    };
    let key = (method.as_str(), code);
    HANDLES.with_borrow_mut(|handles| {
        handles
            .entry(key)
            .or_insert_with(|| {
                metrics::counter!(
                    "holdfast_auth_outcomes_total",
                    "method" => key.0,
                    "code" => key.1
                )
            })
            .increment(1);
    });
}
