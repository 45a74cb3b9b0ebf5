//! Logging set-up: JSON lines in production (for log pipelines), readable
//! text in development. `HOLDFAST_LOG` (or `RUST_LOG`) sets the filter.

use crate::config::Environment;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

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
        Environment::Production => builder.json().flatten_event(true).try_init(),
        Environment::Development => builder.try_init(),
    };
}
