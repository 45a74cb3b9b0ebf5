//! The one middleware every request passes: request id and its log line,
//! metrics, security headers. One layer rather than three, and a plain
//! tower `Service` rather than `axum::middleware::from_fn`: `from_fn`
//! clones the inner route (a boxed service) and boxes its future on every
//! request, and splits and rebuilds the request to extract its state —
//! together about a tenth of a verification's CPU. The concerns stay in
//! their own files.

use super::security_headers::{self, Hsts};
use super::{metrics, request_id};
use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};

/// Applied with `Router::layer`, so it wraps each route and sees the
/// matched route template (metrics are labelled by it).
#[derive(Clone, Copy)]
pub struct Edge {
    hsts: Hsts,
}

impl Edge {
    pub fn new(hsts: Hsts) -> Self {
        Edge { hsts }
    }
}

impl<S> Layer<S> for Edge {
    type Service = EdgeService<S>;

    fn layer(&self, inner: S) -> EdgeService<S> {
        EdgeService {
            inner,
            hsts: self.hsts,
        }
    }
}

#[derive(Clone)]
pub struct EdgeService<S> {
    inner: S,
    hsts: Hsts,
}

impl<S> Service<Request> for EdgeService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let context = request_id::context_for(&request);
        let route = metrics::route_label(request.extensions().get::<MatchedPath>());
        let method = metrics::method_label(request.method());
        let started = Instant::now();
        EdgeFuture {
            inner: request_id::scope(context, self.inner.call(request)),
            route,
            method,
            started,
            hsts: self.hsts,
        }
    }
}

pin_project! {
    /// The route's future, run inside the request's task-local context;
    /// the answer is logged, counted and given its headers when it is ready.
    pub struct EdgeFuture<F: Future> {
        #[pin]
        inner: TaskLocalFuture<request_id::RequestContext, F>,
        route: &'static str,
        method: &'static str,
        started: Instant,
        hsts: Hsts,
    }
}

impl<F> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Ok(mut response) = ready!(this.inner.as_mut().poll(cx));
        let elapsed = this.started.elapsed();
        let status = response.status().as_u16();
        metrics::record(this.route, this.method, status, elapsed);
        let headers = response.headers_mut();
        headers.reserve(8);
        security_headers::apply(headers, *this.hsts);
        if let Some(context) = this.inner.take_value() {
            headers.insert(request_id::HEADER, context.id.header_value());
            request_id::log_finished(context, status, elapsed);
        }
        Poll::Ready(Ok(response))
    }
}
