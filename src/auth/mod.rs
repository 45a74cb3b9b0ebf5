//! The domain: accounts, sessions and the tokens and keys behind them. It
//! knows nothing of HTTP; callers pass `now` so expiry logic is testable at
//! its boundaries.

pub mod accounts;
pub mod api_keys;
pub mod audit;
pub mod emergency;
pub mod external;
pub mod keys;
pub mod master_key;
pub mod passwords;
pub mod policy;
pub mod rate_limit;
pub mod rbac;
pub mod revocation;
pub mod sessions;
pub mod tokens;

use crate::error::ApiError;
use passwords::HashError;

impl From<HashError> for ApiError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Overloaded => ApiError::Unavailable {
                dependency: "password_hasher".into(),
                retry_after_secs: 1,
            },
            HashError::Failed(detail) => ApiError::Internal(detail),
        }
    }
}

/// Seconds since the Unix epoch, read once per request at the edge.
pub fn now() -> crate::store::UnixTime {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
