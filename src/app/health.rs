//! The last step of construction: what the health view watches — every
//! dependency's probe and guard, what runs in process memory instead, and
//! the modes the guards add up to.

use super::stores::Stores;
use crate::auth::external::ExternalIdps;
use crate::config::Config;
use crate::resilience::DependencyGuard;
use crate::resilience::clock::ClockSkew;
use crate::resilience::health::{Component, HealthMonitor};
use crate::resilience::mode::Modes;
use std::sync::Arc;

/// The guards (for the operator's breaker view) and the health monitor,
/// its recovery prober started.
pub(super) fn monitor(
    config: &Config,
    stores: &Stores,
    external: &ExternalIdps,
) -> (Vec<Arc<DependencyGuard>>, Arc<HealthMonitor>) {
    let (db_guard, redis_guard) = (&stores.db_guard, &stores.redis_guard);
    let durable = &stores.durable;
    let mut guards = vec![Arc::clone(db_guard)];
    let mut components = vec![Component {
        probe: Arc::clone(&durable.probe),
        guard: Arc::clone(db_guard),
    }];
    if let Some((probe, guard)) = durable.replica.clone() {
        guards.push(Arc::clone(&guard));
        components.push(Component { probe, guard });
    }
    let mut in_process = Vec::new();
    let redis_probe = stores.shared.probe.clone();
    let database = Arc::clone(&durable.probe);
    let modes = Modes::new(
        Arc::clone(db_guard),
        durable.replica.as_ref().map(|(_, guard)| Arc::clone(guard)),
        redis_probe.as_ref().map(|_| Arc::clone(redis_guard)),
    )
    .with_standby_only(Box::new(move || database.standby_only()));
    match redis_probe {
        Some(probe) => {
            guards.push(Arc::clone(redis_guard));
            components.push(Component {
                probe,
                guard: Arc::clone(redis_guard),
            });
        }
        None => in_process.push(("redis", stores.shared.cache.backend())),
    }
    for idp in external.all() {
        guards.push(Arc::clone(idp.guard()));
        components.push(Component {
            probe: idp.clone(),
            guard: Arc::clone(idp.guard()),
        });
    }
    let mut health = HealthMonitor::new(components, in_process, Arc::new(modes));
    if let Some(clock) = durable.clock.clone() {
        health = health.with_clock(ClockSkew::start(clock, config.tokens.leeway));
    }
    let health = Arc::new(health);
    health.spawn_recovery_prober();
    (guards, health)
}
