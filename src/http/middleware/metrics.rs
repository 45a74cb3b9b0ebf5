//! HTTP request count and latency by route template, method and status.
//! The route is axum's matched path (`/api/v1/users/me/sessions/{id}`), never
//! the raw path, and methods outside the standard set are `OTHER`, so label
//! cardinality stays bounded.
//!
//! The metric handles of each (route, method, status) are created once and
//! kept: building a labelled key per request (three strings, a hash, a
//! registry lookup) cost more than the validation-cache hit it measured.

use axum::extract::MatchedPath;
use axum::http::Method;
use metrics::{Counter, Histogram};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Instant;

#[derive(Clone)]
struct Handles {
    requests: Counter,
    duration: Histogram,
}

type ByRoute = HashMap<String, HashMap<(&'static str, u16), Handles>>;

static HANDLES: LazyLock<RwLock<ByRoute>> = LazyLock::new(|| RwLock::new(HashMap::new()));

pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn handles(route: &str, method: &'static str, status: u16) -> Handles {
    if let Some(h) = HANDLES
        .read()
        .get(route)
        .and_then(|m| m.get(&(method, status)))
    {
        return h.clone();
    }
    let labels = [
        ("route", route.to_string()),
        ("method", method.to_string()),
        ("status", status.to_string()),
    ];
    let created = Handles {
        requests: metrics::counter!("holdfast_http_requests_total", &labels),
        duration: metrics::histogram!("holdfast_http_request_duration_seconds", &labels),
    };
    HANDLES
        .write()
        .entry(route.to_string())
        .or_default()
        .insert((method, status), created.clone());
    created
}

/// Counts the request and records its latency.
pub fn record(route: Option<&MatchedPath>, method: &'static str, status: u16, started: Instant) {
    let route = route.map_or("unmatched", MatchedPath::as_str);
    let h = handles(route, method, status);
    h.requests.increment(1);
    h.duration.record(started.elapsed().as_secs_f64());
}
