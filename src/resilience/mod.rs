//! Everything between holdfast and its dependencies: one `DependencyGuard`
//! per dependency, through which every call passes, and the health view
//! built from what the guards saw, and the service mode derived from them.

pub mod breaker;
pub mod clock;
pub mod failure;
pub mod guard;
pub mod health;
pub mod mode;
pub mod outbox;

pub use guard::{Call, DependencyGuard};
