//! HTTP request count and latency by route template, method and status.
//! The route is axum's matched path (`/api/v1/users/me/sessions/{id}`), never
//! the raw path, and methods outside the standard set are `OTHER`, so label
//! cardinality stays bounded.
//!
//! The metric handles of each (route, method, status) are created once per
//! worker thread and kept: building a labelled key per request (three
//! strings, a hash, a registry lookup) cost more than the validation-cache
//! hit it measured.

use axum::extract::MatchedPath;
use axum::http::Method;
use metrics::{Counter, Histogram};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

struct Handles {
    requests: Counter,
    duration: Histogram,
}

/// Keys are our own route templates, methods and statuses (bounded, not
/// chosen by clients), so foldhash (fast, not hardened against chosen
/// keys) is safe here; SipHash over the route was most of this file's cost.
type Fast = foldhash::fast::RandomState;
type ByRoute = HashMap<(&'static str, &'static str, u16), Handles, Fast>;

thread_local! {
    /// Per worker thread: a shared map behind a lock (and the reference
    /// counts of shared handles) bounced a cache line between the cores on
    /// every request (its cost: docs/performance.md, "Figures behind the
    /// code").
    static HANDLES: RefCell<ByRoute> = RefCell::new(HashMap::default());
}

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

fn create(route: &str, method: &'static str, status: u16) -> Handles {
    let labels = [
        ("route", route.to_string()),
        ("method", method.to_string()),
        ("status", status.to_string()),
    ];
    Handles {
        requests: metrics::counter!("holdfast_http_requests_total", &labels),
        duration: metrics::histogram!("holdfast_http_request_duration_seconds", &labels),
    }
}

/// The route label of a matched path (or `unmatched`), kept for the
/// process's life: a `&'static str` travels with the request for free,
/// where cloning axum's `MatchedPath` took a reference count shared by
/// every request of the route, on every core. Route templates are few
/// and fixed, so what is kept is bounded.
pub fn route_label(route: Option<&MatchedPath>) -> &'static str {
    static LABELS: LazyLock<papaya::HashSet<&'static str, Fast>> =
        LazyLock::new(|| papaya::HashSet::with_hasher(Fast::default()));
    let Some(route) = route.map(MatchedPath::as_str) else {
        return "unmatched";
    };
    let labels = LABELS.pin();
    if let Some(label) = labels.get(route) {
        return label;
    }
    let label: &'static str = Box::leak(route.to_owned().into_boxed_str());
    labels.insert(label);
    labels.get(route).copied().unwrap_or(label)
}

/// Counts the request and records its latency.
pub fn record(route: &'static str, method: &'static str, status: u16, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    HANDLES.with(|cell| {
        let mut map = cell.borrow_mut();
        let handles = map
            .entry((route, method, status))
            .or_insert_with(|| create(route, method, status));
        handles.requests.increment(1);
        handles.duration.record(seconds);
    });
}
