//! holdfast: an authentication service that stays up when its dependencies don't.
//!
//! The folders are the architecture (DESIGN.md §7): `http` parses and maps,
//! `auth` is the domain, `store` persists behind traits, `resilience` guards
//! every call to a dependency.
#![deny(clippy::unwrap_used)]

pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod http;
pub mod resilience;
pub mod secret;
pub mod store;
pub mod telemetry;
