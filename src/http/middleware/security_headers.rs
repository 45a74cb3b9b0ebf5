//! Security headers on every response (DESIGN.md §3). `Cache-Control:
//! no-store` is the default so no token response is ever cached; a handler
//! that wants caching (JWKS) sets its own header first, and the one page
//! with a stylesheet (`/status`) its own Content-Security-Policy.

use axum::http::{HeaderMap, HeaderValue, header};

/// Whether to send HSTS (production only: development runs on plain http).
#[derive(Clone, Copy)]
pub struct Hsts(pub bool);

/// Sets the headers on an answer.
pub fn apply(headers: &mut HeaderMap, hsts: Hsts) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A page (the status page) sets its own, as strict as it can be.
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if hsts.0 {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
    }
}
