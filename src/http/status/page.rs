//! The status page's HTML: one server-rendered document, escaped by maud,
//! styled by one inline stylesheet (allowed by its hash in the page's own
//! Content-Security-Policy), no script, nothing from another host. It
//! reloads itself every five seconds and lays its cards out in as many
//! columns as the screen holds, one on a phone.

use super::{ComponentView, StatusView};
use crate::resilience::breaker::BreakerState;
use base64::Engine;
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// Seconds between reloads.
const REFRESH_SECS: u32 = 5;

/// Classes only, no `style` attributes: a hash allows the stylesheet, not
/// inline attributes.
const STYLE: &str = "\
:root{color-scheme:light dark;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--line:#8884}
*{box-sizing:border-box}
body{font:15px/1.4 system-ui,sans-serif;margin:0;padding:1rem;max-width:72rem;margin-inline:auto}
h1{font-size:1.4rem;margin:0 0 .25rem}
h2{font-size:1.05rem;margin:1.25rem 0 .5rem}
.meta{opacity:.75;font-size:.85rem}
.grid{display:grid;gap:.75rem;grid-template-columns:repeat(auto-fill,minmax(15rem,1fr))}
.card{border:1px solid var(--line);border-radius:.5rem;padding:.6rem .8rem}
.card h3{font-size:1rem;margin:0 0 .3rem;overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:auto 1fr;gap:.1rem .75rem;margin:0}
dt{opacity:.75;white-space:nowrap}dd{margin:0;text-align:right;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.badge{display:inline-block;padding:0 .45rem;border-radius:1rem;color:#fff;font-weight:600}
.healthy,.closed,.normal{background:var(--ok)}
.degraded,.half_open,.read_only{background:var(--warn)}
.unhealthy,.open,.minimal{background:var(--bad)}
.summary{display:flex;flex-wrap:wrap;gap:.5rem 1.25rem;align-items:center}
";

/// The page's policy: its own stylesheet and nothing else.
pub(super) fn content_security_policy() -> String {
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, STYLE.as_bytes());
    let hash = base64::engine::general_purpose::STANDARD.encode(hash.as_ref());
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'"
    )
}

pub(super) fn render(view: &StatusView) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content=(REFRESH_SECS);
                title { "holdfast status: " (view.status) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "holdfast" }
                    div.summary {
                        span { "status " span #status.badge.(view.status) { (view.status) } }
                        span { "mode " span #mode.badge.(view.mode) { (view.mode) } }
                    }
                    p.meta { "version " (view.version) " · " time { (view.time) }
                        " · reloads every " (REFRESH_SECS) " s" }
                }
                h2 { "Dependencies" }
                div.grid #components { @for c in &view.components { (component(c)) } }
                h2 { "Caches" }
                div.grid #caches { @for (name, stats) in &view.caches {
                    div.card {
                        h3 { (name) }
                        dl {
                            dt { "hit rate" } dd { (percent(stats.hit_rate * 100.0)) }
                            dt { "hits / misses" } dd { (stats.hits) " / " (stats.misses) }
                            dt { "entries" } dd { (stats.entries) }
                            dt { "evictions" } dd { (stats.evictions) }
                        }
                    }
                } }
                h2 { "Waiting for the database" }
                div.grid #backlog {
                    div.card { dl {
                        @for b in &view.backlogs {
                            dt { (b.name) " (" (b.backend) ")" }
                            dd { @match b.waiting { Some(n) => (n), None => "unknown" } }
                        }
                        dt { "revocations held" } dd #revocations { (view.revocations) }
                    } }
                }
                h2 { "Security events, last hour" }
                div.grid #events { div.card {
                    @if view.events.is_empty() {
                        p { "none" }
                    } @else {
                        dl { @for (kind, count) in &view.events { dt { (kind) } dd { (count) } } }
                    }
                } }
            }
        }
    }
    .into_string()
}

fn component(c: &ComponentView) -> Markup {
    let state = c.state.as_str();
    html! {
        div.card.component data-name=(c.name) data-state=(state) {
            h3 { (c.name) " " span.badge.(state) { (breaker_words(c.state)) } }
            dl {
                dt { "backend" } dd { (c.backend) }
                @if let Some(w) = &c.window {
                    dt { "failure rate" } dd { (percent(w.failure_rate)) }
                    dt { "slow calls" } dd { (percent(w.slow_call_rate)) }
                    dt { "calls / failures" } dd { (w.calls) " / " (w.failures) }
                } @else {
                    dt { "runs" } dd { "in this process" }
                }
                @if let Some((kind, at)) = &c.last_failure {
                    dt { "last failure" } dd.kind { (kind) }
                    dt { "at" } dd { time { (at) } }
                }
            }
        }
    }
}

fn breaker_words(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "breaker closed",
        BreakerState::HalfOpen => "breaker half-open",
        BreakerState::Open => "breaker open",
    }
}

fn percent(value: f64) -> String {
    format!("{value:.1} %")
}
