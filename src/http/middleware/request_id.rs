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
use axum::http::{HeaderValue, Method, Uri};
use std::time::Instant;
use uuid::Uuid;

pub const HEADER: &str = "x-request-id";

/// What every log line of a request is stamped with.
pub struct RequestContext {
    pub id: String,
    pub method: Method,
    /// The request's URI (a cheap, shared copy); log lines show its path.
    pub uri: Uri,
}

tokio::task_local! {
    static REQUEST: RequestContext;
}

/// The id of the request being served, if called inside one.
pub fn current() -> Option<String> {
    REQUEST.try_with(|r| r.id.clone()).ok()
}

/// `f` applied to the request being served, if called inside one.
pub fn with_current<R>(f: impl FnOnce(&RequestContext) -> R) -> Option<R> {
    REQUEST.try_with(f).ok()
}

/// Accepts up to 128 visible ASCII characters; anything else is replaced,
/// so a client cannot inject into logs.
fn sane(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let ok = !text.is_empty() && text.len() <= 128 && text.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| text.to_string())
}

/// The request's context (id echoed or generated) and the header value
/// to answer it with.
pub fn context_for(request: &Request) -> (RequestContext, Option<HeaderValue>) {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(sane)
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    let header = HeaderValue::from_str(&id).ok();
    let context = RequestContext {
        id,
        method: request.method().clone(),
        uri: request.uri().clone(),
    };
    (context, header)
}

/// Runs `fut` (the rest of the request) inside `context`.
pub async fn scope<F: std::future::Future>(context: RequestContext, fut: F) -> F::Output {
    REQUEST.scope(context, fut).await
}

/// The request's own log line. Successes at debug: forward-auth answers
/// tens of thousands of verifications a second, and a line each would cost
/// more than the verification. Refusals and failures stay visible.
pub fn log_finished(status: u16, started: Instant) {
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match status {
        500.. => tracing::warn!(status, latency_ms, "request finished"),
        400.. => tracing::info!(status, latency_ms, "request finished"),
        _ => tracing::debug!(status, latency_ms, "request finished"),
    }
}
