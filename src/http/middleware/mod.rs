//! Cross-cutting HTTP concerns applied to every route.

pub mod metrics;
pub mod request_id;
pub mod security_headers;
