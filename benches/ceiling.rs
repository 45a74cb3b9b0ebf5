//! The ceiling of the load benchmark (`benches/load.sh`): the same axum and
//! tokio as holdfast, answering 204 to everything and doing nothing else.
//! Verify throughput is reported as a fraction of this server's.
//!
//! `cargo run --release --example ceiling -- 127.0.0.1:PORT`

use axum::Router;
use axum::http::StatusCode;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8099".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    let app = Router::new().fallback(|| async { StatusCode::NO_CONTENT });
    axum::serve(listener, app).await.expect("serve");
}
