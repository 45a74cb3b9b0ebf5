//! Cross-cutting HTTP concerns applied to every route, through one layer
//! (`edge.rs`).

pub mod edge;
pub mod metrics;
pub mod ready;
pub mod request_id;
pub mod security_headers;
