//! Everything between holdfast and its dependencies: one `DependencyGuard`
//! per dependency, through which every call passes, and the health view
//! built from what the guards saw.

pub mod breaker;
pub mod failure;
pub mod guard;
pub mod health;
pub mod outbox;

pub use guard::{Call, DependencyGuard};
