//! `ApiError`: the error-code table of DESIGN.md §3. Its `IntoResponse` is the
//! only place a status code is chosen for a failure; 500 bodies stay generic
//! and the detail goes to the log under the same correlation id. The domain's
//! `AuthError` becomes an `ApiError` here and nowhere else (`From`), where
//! its durations become `Retry-After` seconds.

use crate::auth::error::AuthError;
use crate::auth::error::KeyError;
use crate::http::middleware::request_id;
use crate::store::StoreError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use crate::auth::error::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("invalid credentials")]
    InvalidCredentials,
    /// No credential at all: answered with a bare `WWW-Authenticate: Bearer`.
    #[error("authentication required")]
    MissingCredentials,
    #[error("token expired")]
    TokenExpired,
    #[error("token invalid")]
    TokenInvalid,
    #[error("token or session revoked")]
    Revoked,
    #[error("not permitted")]
    Forbidden,
    /// AUTH005 with the reason in `details.reason`.
    #[error("not permitted: {0}")]
    ForbiddenBecause(String),
    #[error("account disabled")]
    AccountDisabled,
    #[error("refresh token reuse detected")]
    RefreshReuse,
    #[error("{0} already taken")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    #[error("rate limited")]
    RateLimited { limit: u32, retry_after_secs: u64 },
    #[error("dependency {dependency} unavailable")]
    Unavailable {
        dependency: String,
        retry_after_secs: u64,
    },
    #[error("read-only mode")]
    ReadOnly,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }

    /// The contract's code (`AUTH001`…).
    pub fn code(&self) -> &'static str {
        self.parts().0
    }

    /// The contract's code, status and client-facing message.
    fn parts(&self) -> (&'static str, StatusCode, &'static str) {
        use ApiError::*;
        match self {
            Malformed(_) => ("REQ001", StatusCode::BAD_REQUEST, "Malformed request"),
            MethodNotAllowed => (
                "REQ001",
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
            ),
            PayloadTooLarge => (
                "REQ002",
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large",
            ),
            Validation(_) => (
                "VAL001",
                StatusCode::UNPROCESSABLE_ENTITY,
                "Validation failed",
            ),
            InvalidCredentials => ("AUTH001", StatusCode::UNAUTHORIZED, "Invalid credentials"),
            MissingCredentials => (
                "AUTH003",
                StatusCode::UNAUTHORIZED,
                "Authentication required",
            ),
            TokenExpired => ("AUTH002", StatusCode::UNAUTHORIZED, "Token expired"),
            TokenInvalid => ("AUTH003", StatusCode::UNAUTHORIZED, "Token invalid"),
            Revoked => (
                "AUTH004",
                StatusCode::UNAUTHORIZED,
                "Token or session revoked",
            ),
            Forbidden | ForbiddenBecause(_) => ("AUTH005", StatusCode::FORBIDDEN, "Not permitted"),
            AccountDisabled => ("AUTH006", StatusCode::FORBIDDEN, "Account disabled"),
            RefreshReuse => (
                "AUTH007",
                StatusCode::UNAUTHORIZED,
                "Refresh token reuse detected; session revoked",
            ),
            Conflict(_) => (
                "CONFLICT001",
                StatusCode::CONFLICT,
                "Email or username already taken",
            ),
            NotFound => ("NOTFOUND", StatusCode::NOT_FOUND, "Not found"),
            RateLimited { .. } => (
                "RATE001",
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
            ),
            Unavailable { .. } => (
                "SVC001",
                StatusCode::SERVICE_UNAVAILABLE,
                "A dependency is unavailable",
            ),
            ReadOnly => (
                "SVC002",
                StatusCode::SERVICE_UNAVAILABLE,
                "Service is in read-only mode",
            ),
            Internal(_) => (
                "INTERNAL",
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
            ),
        }
    }

    fn details(&self) -> Option<serde_json::Value> {
        match self {
            ApiError::Validation(fields) => Some(json!({ "fields": fields })),
            ApiError::Conflict(field) => Some(json!({ "field": field })),
            ApiError::Malformed(reason) => Some(json!({ "reason": reason })),
            ApiError::ForbiddenBecause(reason) => Some(json!({ "reason": reason })),
            ApiError::Unavailable { dependency, .. } => Some(json!({ "dependency": dependency })),
            _ => None,
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Validation(fields) => ApiError::Validation(fields),
            AuthError::InvalidCredentials => ApiError::InvalidCredentials,
            AuthError::TokenExpired => ApiError::TokenExpired,
            AuthError::TokenInvalid => ApiError::TokenInvalid,
            AuthError::Revoked => ApiError::Revoked,
            AuthError::Forbidden => ApiError::Forbidden,
            AuthError::ForbiddenBecause(reason) => ApiError::ForbiddenBecause(reason),
            AuthError::AccountDisabled => ApiError::AccountDisabled,
            AuthError::RefreshReuse => ApiError::RefreshReuse,
            AuthError::Conflict(field) => ApiError::Conflict(field),
            AuthError::NotFound => ApiError::NotFound,
            AuthError::RateLimited { limit, retry_after } => ApiError::RateLimited {
                limit,
                // The window's reset, whole seconds down, never 0.
                retry_after_secs: retry_after.as_secs().max(1),
            },
            AuthError::Unavailable {
                dependency,
                retry_after,
            } => ApiError::Unavailable {
                dependency,
                retry_after_secs: unavailable_secs(retry_after),
            },
            AuthError::ReadOnly => ApiError::ReadOnly,
            AuthError::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

/// `Retry-After` for an unavailable dependency: never 0, and a fraction of
/// a second counts as one more (a breaker's half-open probe must have come
/// due when the client returns).
fn unavailable_secs(retry_after: Duration) -> u64 {
    retry_after.as_secs().max(1) + u64::from(retry_after.subsec_nanos() > 0)
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        AuthError::from(e).into()
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        AuthError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, status, message) = self.parts();
        let correlation_id = request_id::current().unwrap_or_default();
        match &self {
            ApiError::Internal(detail) => {
                tracing::error!(%correlation_id, error = %detail, "internal error")
            }
            ApiError::Unavailable { dependency, .. } => {
                tracing::warn!(%correlation_id, %dependency, "dependency unavailable")
            }
            _ => {}
        }
        let mut error = json!({
            "code": code,
            "message": message,
            "correlation_id": correlation_id,
            "timestamp": OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
        });
        if let Some(details) = self.details() {
            error["details"] = details;
        }
        let mut response = (status, axum::Json(json!({ "error": error }))).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::MissingCredentials => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TokenExpired
            | ApiError::TokenInvalid
            | ApiError::Revoked
            | ApiError::RefreshReuse => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            ApiError::Unavailable {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::ReadOnly => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(30u64));
            }
            ApiError::RateLimited {
                limit,
                retry_after_secs,
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
                headers.insert("ratelimit-limit", HeaderValue::from(*limit));
                headers.insert("ratelimit-remaining", HeaderValue::from(0u32));
                headers.insert("ratelimit-reset", HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry_after(e: AuthError) -> u64 {
        match ApiError::from(e) {
            ApiError::Unavailable {
                retry_after_secs, ..
            }
            | ApiError::RateLimited {
                retry_after_secs, ..
            } => retry_after_secs,
            other => panic!("no Retry-After for {other:?}"),
        }
    }

    /// The seconds the contract's clients have always seen: a breaker's
    /// wait rounds up past a fraction (and a wait under a second is 2), a
    /// limiter window's reset rounds down, neither is ever 0.
    #[test]
    fn durations_become_the_same_retry_after_seconds() {
        let unavailable = |ms| AuthError::unavailable("database", Duration::from_millis(ms));
        assert_eq!(retry_after(unavailable(0)), 1);
        assert_eq!(retry_after(unavailable(500)), 2);
        assert_eq!(retry_after(unavailable(1_000)), 1);
        assert_eq!(retry_after(unavailable(5_000)), 5);
        assert_eq!(retry_after(unavailable(5_200)), 6);
        let limited = |ms| AuthError::RateLimited {
            limit: 5,
            retry_after: Duration::from_millis(ms),
        };
        assert_eq!(retry_after(limited(0)), 1);
        assert_eq!(retry_after(limited(1_900)), 1);
        assert_eq!(retry_after(limited(60_000)), 60);
    }

    /// The OpenAPI document's `ErrorCode` lists every code answered here.
    #[test]
    fn every_code_is_in_the_documented_enum() {
        use utoipa::PartialSchema;
        let schema =
            serde_json::to_value(crate::http::openapi::ErrorCode::schema()).expect("schema");
        let documented: Vec<&str> = schema["enum"]
            .as_array()
            .expect("enum")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let all = [
            ApiError::Malformed(String::new()),
            ApiError::MethodNotAllowed,
            ApiError::PayloadTooLarge,
            ApiError::Validation(Vec::new()),
            ApiError::InvalidCredentials,
            ApiError::MissingCredentials,
            ApiError::TokenExpired,
            ApiError::TokenInvalid,
            ApiError::Revoked,
            ApiError::Forbidden,
            ApiError::ForbiddenBecause(String::new()),
            ApiError::AccountDisabled,
            ApiError::RefreshReuse,
            ApiError::Conflict(String::new()),
            ApiError::NotFound,
            ApiError::RateLimited {
                limit: 1,
                retry_after_secs: 1,
            },
            ApiError::Unavailable {
                dependency: String::new(),
                retry_after_secs: 1,
            },
            ApiError::ReadOnly,
            ApiError::Internal(String::new()),
        ];
        for e in all {
            let (code, _, _) = e.parts();
            assert!(documented.contains(&code), "{code} not in ErrorCode");
        }
    }

    #[test]
    fn store_errors_keep_their_codes() {
        let closed = StoreError::CircuitOpen {
            dependency: "redis",
            retry_after: Duration::from_millis(2_500),
        };
        assert_eq!(retry_after(AuthError::from(closed)), 3);
        assert!(matches!(
            ApiError::from(StoreError::Superseded),
            ApiError::Revoked
        ));
        assert!(matches!(
            ApiError::from(StoreError::ReadOnly),
            ApiError::ReadOnly
        ));
    }
}
