//! Logging set-up: JSON lines in production (for log pipelines), readable
//! text in development. `HOLDFAST_LOG` (or `RUST_LOG`) sets the filter.

use crate::config::Environment;
use tracing_subscriber::EnvFilter;

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
