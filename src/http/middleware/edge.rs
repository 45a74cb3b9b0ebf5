//! The one middleware every request passes: request id and its log line,
//! metrics, security headers. One layer rather than three, because each
//! `from_fn` layer boxes and clones a service per request, which showed on
//! the verify path; the concerns stay in their own files.

use super::security_headers::{self, Hsts};
use super::{metrics, request_id};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;

pub async fn layer(State(hsts): State<Hsts>, request: Request, next: Next) -> Response {
    let (context, id_header) = request_id::context_for(&request);
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = metrics::method_label(request.method());
    let started = Instant::now();
    let mut response = request_id::scope(context, async move {
        let response = next.run(request).await;
        request_id::log_finished(response.status().as_u16(), started);
        response
    })
    .await;
    metrics::record(route.as_ref(), method, response.status().as_u16(), started);
    let headers = response.headers_mut();
    headers.reserve(8);
    security_headers::apply(headers, hsts);
    if let Some(value) = id_header {
        headers.insert(request_id::HEADER, value);
    }
    response
}
