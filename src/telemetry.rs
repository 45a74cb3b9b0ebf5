//! Logging set-up: JSON lines in production (for log pipelines), readable
//! text in development. `HOLDFAST_LOG` (or `RUST_LOG`) sets the filter.

use crate::config::Environment;
use crate::http::middleware::request_id;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer, format};
use tracing_subscriber::registry::LookupSpan;

/// Histogram buckets in seconds: from a cache hit to a dependency timeout.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The Prometheus recorder. The `metrics` facade is process-global by
/// design (its macros find one recorder), so it is installed once per
/// process; every app built in the process (tests build many) shares it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then our
            // handle renders nothing, which the metrics test would catch.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

pub fn init(env: Environment) {
    let filter = std::env::var("HOLDFAST_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info,sqlx=warn".to_string());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    // A second init (tests building several apps) is harmless: ignore it.
    let _ = match env {
        Environment::Production => builder
            .json()
            .flatten_event(true)
            .event_format(WithRequest {
                inner: format().json().flatten_event(true),
                json: true,
            })
            .try_init(),
        Environment::Development => builder
            .event_format(WithRequest {
                inner: format(),
                json: false,
            })
            .try_init(),
    };
}

/// Stamps every event written while a request is served with its id,
/// method and path (from the request's task-local; see
/// `http::middleware::request_id`). tracing-subscriber has no hook for
/// fields from outside the event and its spans, hence this wrapper around
/// the standard formats.
struct WithRequest<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithRequest<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let request = request_id::with_current(|r| {
            (
                r.id.to_string(),
                r.method.as_str().to_string(),
                r.uri.path().to_string(),
            )
        });
        let Some((id, method, path)) = request else {
            return self.inner.format_event(ctx, writer, event);
        };
        if !self.json {
            write!(
                writer,
                "request{{request_id={id} method={method} path={path}}}: "
            )?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let quoted = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
        if line.starts_with('{') {
            line.insert_str(
                1,
                &format!(
                    "\"request_id\":{},\"method\":{},\"path\":{},",
                    quoted(&id),
                    quoted(&method),
                    quoted(&path)
                ),
            );
        }
        writer.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::middleware::request_id::RequestContext;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("sink").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn json_lines_inside_a_request_carry_its_id_method_and_path() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .event_format(WithRequest {
                inner: format().json().flatten_event(true),
                json: true,
            })
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let context = RequestContext {
            id: request_id::RequestId::Given(axum::http::HeaderValue::from_static("req-\"1\"")),
            method: axum::http::Method::POST,
            uri: axum::http::Uri::from_static("/api/v1/auth/login"),
        };
        request_id::scope(context, async {
            tracing::warn!(user = "u1", "inside");
        })
        .await;
        tracing::warn!("outside");
        let text = String::from_utf8(sink.0.lock().expect("sink").clone()).expect("utf8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        assert_eq!(lines[0]["request_id"], "req-\"1\"");
        assert_eq!(lines[0]["method"], "POST");
        assert_eq!(lines[0]["path"], "/api/v1/auth/login");
        assert_eq!(lines[0]["user"], "u1");
        assert!(lines[1].get("request_id").is_none());
    }
}
