//! `GET /status`: a live page for operators (DESIGN.md §3), and `GET /`,
//! which redirects to it. It reads what this process holds in memory —
//! the guards' breakers, the mode, the caches' counters, the revocation
//! set, the last hour's security events — and pings nothing, so it
//! renders at once while PostgreSQL or Redis is away; only the backlog of
//! the Redis-kept logs is asked for, within a short bound.
//!
//! Like `/api/v1/health` it is public unless `[admin] listen` moves it
//! (`operator::endpoints`), so it names a failure by its kind alone: no
//! error text, URL or address reaches it.

mod page;

use crate::app::{AppState, Backlog};
use crate::cache::CacheStats;
use crate::resilience::breaker::BreakerState;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use std::collections::BTreeMap;
use std::time::Duration;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// Times on the page: to the second, in UTC, short enough for a phone.
const SHOWN_TIME: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");

/// How long the page waits for a backlog kept in Redis before showing it
/// as unknown: well under the page's five-second refresh.
const BACKLOG_WAIT: Duration = Duration::from_millis(250);

/// `GET /`: the status page is the service's front door.
#[utoipa::path(
    get,
    path = "/",
    tag = "health",
    responses((status = 303, description = "To the status page", headers(("Location" = String))))
)]
pub async fn home() -> Redirect {
    Redirect::to("/status")
}

/// A live page for operators: components, breakers, mode, cache hit
/// rates, recent security-event counts; refreshes itself.
#[utoipa::path(
    get,
    path = "/status",
    tag = "health",
    responses((status = 200, description = "Server-rendered HTML, no JavaScript", body = String, content_type = "text/html"))
)]
pub async fn page(State(state): State<AppState>) -> Response {
    let view = StatusView::gather(&state).await;
    let mut response = axum::response::Html(page::render(&view)).into_response();
    let headers = response.headers_mut();
    // The API's `default-src 'none'` would drop the page's stylesheet: this
    // page allows its own inline stylesheet, by hash, and nothing else.
    if let Ok(policy) = HeaderValue::from_str(&page::content_security_policy()) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    response
}

/// Everything the page shows, gathered before any HTML is written.
pub(crate) struct StatusView {
    pub status: &'static str,
    pub mode: &'static str,
    pub version: &'static str,
    pub time: String,
    pub components: Vec<ComponentView>,
    pub caches: Vec<(&'static str, CacheStats)>,
    pub backlogs: Vec<Backlog>,
    pub revocations: usize,
    pub events: BTreeMap<&'static str, u64>,
}

/// One dependency as its guard has seen it.
pub(crate) struct ComponentView {
    pub name: &'static str,
    pub backend: &'static str,
    pub state: BreakerState,
    /// The breaker's window, in percent; none for what runs in process.
    pub window: Option<Window>,
    /// The last failure's kind (`timeout`, `refused`…) and when: never its
    /// text, which names hosts.
    pub last_failure: Option<(&'static str, String)>,
}

impl ComponentView {
    /// Breaker closed and no failure in its window: without a ping, the
    /// page's reading of `/api/v1/health`'s "answering, breaker closed".
    fn well(&self) -> bool {
        self.state == BreakerState::Closed && self.window.as_ref().is_none_or(|w| w.failures == 0)
    }
}

pub(crate) struct Window {
    pub failure_rate: f64,
    pub slow_call_rate: f64,
    pub calls: u32,
    pub failures: u32,
}

impl StatusView {
    async fn gather(state: &AppState) -> Self {
        let components: Vec<ComponentView> = state
            .health()
            .watched()
            .into_iter()
            .map(|(name, backend, guard)| component(name, backend, guard))
            .collect();
        let status = if !state.keys().is_ready() {
            "unhealthy"
        } else if components.iter().all(ComponentView::well) {
            "healthy"
        } else {
            "degraded"
        };
        let caches = [
            state.validation().view(),
            state.api_keys().view(),
            state.rbac().view(),
        ]
        .iter()
        .map(|c| (c.name(), c.stats()))
        .collect();
        let now = time::OffsetDateTime::now_utc();
        Self {
            status,
            mode: state.health().mode().as_str(),
            version: env!("CARGO_PKG_VERSION"),
            time: now.format(SHOWN_TIME).unwrap_or_default(),
            components,
            caches,
            backlogs: state.backlogs().read(BACKLOG_WAIT).await,
            revocations: state.revocations().len(),
            events: state.audit().last_hour(now.unix_timestamp()),
        }
    }
}

fn component(
    name: &'static str,
    backend: &'static str,
    guard: Option<&crate::resilience::DependencyGuard>,
) -> ComponentView {
    let Some(guard) = guard else {
        return ComponentView {
            name,
            backend,
            state: BreakerState::Closed,
            window: None,
            last_failure: None,
        };
    };
    let snapshot = guard.breaker().snapshot();
    let last_failure = guard.stats().last_failure.map(|f| {
        let at = f.at.format(SHOWN_TIME).unwrap_or_default();
        (f.kind.as_str(), at)
    });
    ComponentView {
        name,
        backend,
        state: snapshot.state,
        window: Some(Window {
            failure_rate: snapshot.failure_rate,
            slow_call_rate: snapshot.slow_call_rate,
            calls: snapshot.calls,
            failures: snapshot.failures,
        }),
        last_failure,
    }
}
