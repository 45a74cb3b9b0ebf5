//! holdfast: an authentication service that stays up when its dependencies don't.
//!
//! The folders are the architecture (DESIGN.md §7): `http` parses and maps,
//! `auth` is the domain, `store` persists behind traits, `resilience` guards
//! every call to a dependency.
// No panics in the service: errors are answered, not crashes. Start-up
// code that cannot go on without a value says so with a local allow.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::await_holding_lock
)]

pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
/// Entry points for the fuzz targets in fuzz/; not part of the service.
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod resilience;
pub mod secret;

pub mod store;
pub mod telemetry;
