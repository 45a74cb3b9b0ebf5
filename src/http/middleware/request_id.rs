//! `X-Request-Id`: echoed when the client sent a sane one, generated
//! otherwise; set on every response and kept, with the method and path, in
//! a task-local for the request's lifetime. Every log line written while
//! serving the request carries them (`telemetry.rs` reads the task-local
//! when it formats an event) and every error body carries the id as
//! `correlation_id`. Logs one line per request: refusals and failures at
//! info/warn, successes at debug. Wired in by `edge.rs`.
//!
//! A tracing span per request would do the same, but creating, entering
//! and leaving one on every poll cost about a quarter of a verification's
//! CPU; the task-local costs nothing until a line is actually written.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, Uri};
use std::fmt;
use std::time::Duration;
use uuid::Uuid;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// A request's id: the client's own (already checked to be sane) or one
/// generated here. Kept unformatted: most requests never write a log line,
/// and formatting a generated UUID into a `String` up front was an
/// allocation per request.
pub enum RequestId {
    Given(HeaderValue),
    Generated(Uuid),
}

impl RequestId {
    /// The value of the response's `X-Request-Id`.
    pub fn header_value(&self) -> HeaderValue {
        match self {
            RequestId::Given(value) => value.clone(),
            RequestId::Generated(id) => {
                let mut buf = Uuid::encode_buffer();
                // A hyphenated UUID is always a valid header value; the
                // fallback is unreachable but keeps this free of panics.
                HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf))
                    .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
            }
        }
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // `sane` admitted only visible ASCII.
            RequestId::Given(value) => f.write_str(value.to_str().unwrap_or_default()),
            RequestId::Generated(id) => id.hyphenated().fmt(f),
        }
    }
}

/// What every log line of a request is stamped with.
pub struct RequestContext {
    pub id: RequestId,
    pub method: Method,
    /// The request's URI (a cheap, shared copy); log lines show its path.
    pub uri: Uri,
}

tokio::task_local! {
    static REQUEST: RequestContext;
}

/// The id of the request being served, if called inside one.
pub fn current() -> Option<String> {
    REQUEST.try_with(|r| r.id.to_string()).ok()
}

/// `f` applied to the request being served, if called inside one.
pub fn with_current<R>(f: impl FnOnce(&RequestContext) -> R) -> Option<R> {
    REQUEST.try_with(f).ok()
}

/// Accepts up to 128 visible ASCII characters; anything else is replaced,
/// so a client cannot inject into logs.
fn sane(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(u8::is_ascii_graphic)
}

/// The request's context: its id echoed or generated, method and URI.
pub fn context_for(request: &Request) -> RequestContext {
    let id = match request.headers().get(HEADER) {
        Some(value) if sane(value) => RequestId::Given(value.clone()),
        _ => RequestId::Generated(Uuid::new_v4()),
    };
    RequestContext {
        id,
        method: request.method().clone(),
        uri: request.uri().clone(),
    }
}

/// Runs `fut` (the rest of the request) inside `context`.
pub fn scope<F: std::future::Future>(
    context: RequestContext,
    fut: F,
) -> tokio::task::futures::TaskLocalFuture<RequestContext, F> {
    REQUEST.scope(context, fut)
}

/// The request's own log line, written inside its context. Successes at
/// debug: forward-auth answers tens of thousands of verifications a
/// second, and a line each would cost more than the verification.
/// Refusals and failures stay visible.
pub fn log_finished(context: RequestContext, status: u16, elapsed: Duration) {
    if status < 400 && !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    REQUEST.sync_scope(context, || match status {
        500.. => tracing::warn!(status, latency_ms, "request finished"),
        400.. => tracing::info!(status, latency_ms, "request finished"),
        _ => tracing::debug!(status, latency_ms, "request finished"),
    });
}
