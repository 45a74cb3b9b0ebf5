//! The health view: one ping per dependency through its guard (so it is
//! bounded by the dependency's timeout), combined with what the guard has
//! seen of real traffic. Readiness is only "are the signing keys loaded".
//!
//! Status and mode are typed here (`Status`, `Mode`) and decided from the
//! guards' breakers, never by reading back the words of a report; the HTTP
//! layer asks `Status::serving` rather than comparing strings.

use crate::resilience::DependencyGuard;
use crate::resilience::breaker::BreakerState;
use crate::resilience::clock::ClockSkew;
use crate::resilience::mode::{Mode, Modes};
use crate::store::Probe;
use futures::future::join_all;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use time::format_description::well_known::Rfc3339;

/// One checked dependency.
pub struct Component {
    pub probe: Arc<dyn Probe>,
    pub guard: Arc<DependencyGuard>,
}

/// The node's overall health (DESIGN.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Keys loaded, every dependency answering with its breaker closed.
    Healthy,
    /// Keys loaded; some dependency failing or its breaker not closed.
    Degraded,
    /// This node cannot verify tokens (signing keys not loaded).
    Unhealthy,
}

impl Status {
    /// Whether the node serves at all: health answers 200, else 503.
    pub fn serving(self) -> bool {
        self != Status::Unhealthy
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ComponentHealth {
    pub healthy: bool,
    pub latency_ms: f64,
    pub circuit_state: BreakerState,
    pub failure_count: u64,
    pub last_failure: Option<String>,
    #[schema(value_type = String)]
    pub backend: &'static str,
    /// The primary's position in `[database] url` (a position, not an
    /// address: this view is public); absent for other components.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_host: Option<usize>,
}

/// The public health view: `components` is keyed by dependency
/// (`database`, `database_replica`, `redis`, `idp:NAME`…).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthReport {
    pub status: Status,
    pub mode: Mode,
    #[schema(value_type = String)]
    pub version: &'static str,
    #[schema(format = DateTime)]
    pub timestamp: String,
    #[schema(value_type = BTreeMap<String, ComponentHealth>)]
    pub components: BTreeMap<&'static str, ComponentHealth>,
    /// Conditions that do not fail a dependency but need an operator
    /// (a clock drifting past half the leeway).
    pub warnings: Vec<String>,
}

/// How often a breaker that is not closed is probed in the background, so
/// it closes again when its dependency returns even without traffic.
const RECOVERY_PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

pub struct HealthMonitor {
    components: Vec<Component>,
    /// Backends with nothing to ping (the in-process session cache).
    in_process: Vec<(&'static str, &'static str)>,
    modes: Arc<Modes>,
    clock: Option<Arc<ClockSkew>>,
}

impl HealthMonitor {
    pub fn new(
        components: Vec<Component>,
        in_process: Vec<(&'static str, &'static str)>,
        modes: Arc<Modes>,
    ) -> Self {
        Self {
            components,
            in_process,
            modes,
            clock: None,
        }
    }

    /// Adds the clock-skew check (PostgreSQL only).
    pub fn with_clock(mut self, clock: Arc<ClockSkew>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Every component by name, with where it runs and its guard (none for
    /// what runs in process memory): the status page's view, which reads
    /// the guards and pings nothing.
    pub fn watched(&self) -> Vec<(&'static str, &'static str, Option<&DependencyGuard>)> {
        let mut all: Vec<_> = self
            .components
            .iter()
            .map(|c| (c.probe.name(), c.probe.backend(), Some(c.guard.as_ref())))
            .chain(self.in_process.iter().map(|(n, b)| (*n, *b, None)))
            .collect();
        all.sort_by_key(|(name, _, _)| *name);
        all
    }

    /// The mode now (logged and exported when it changed).
    pub fn mode(&self) -> Mode {
        self.modes.current()
    }

    /// Pings, through their guards, the dependencies whose breaker is not
    /// closed. The guard turns a due ping into a half-open probe. Each tick
    /// also looks at the mode, so a change is logged and exported within a
    /// tick even when nobody asks for health.
    pub fn spawn_recovery_prober(self: &Arc<Self>) {
        let monitor = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RECOVERY_PROBE_EVERY);
            loop {
                tick.tick().await;
                let Some(monitor) = monitor.upgrade() else {
                    return;
                };
                monitor.modes.current();
                for c in &monitor.components {
                    if c.guard.breaker().state() != BreakerState::Closed {
                        let _ = c.probe.ping().await;
                    }
                }
                monitor.modes.current();
            }
        });
    }

    /// `keys_ready`: whether this node can verify tokens at all.
    pub async fn report(&self, keys_ready: bool) -> HealthReport {
        let checks = self.components.iter().map(|c| async move {
            let started = Instant::now();
            let healthy = c.probe.ping().await.is_ok();
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            let stats = c.guard.stats();
            (
                c.probe.name(),
                ComponentHealth {
                    healthy,
                    latency_ms: (latency_ms * 100.0).round() / 100.0,
                    circuit_state: c.guard.breaker().state(),
                    failure_count: stats.failure_count,
                    // The kind only: the driver's text names hosts and
                    // addresses, and this view is public.
                    last_failure: stats.last_failure.and_then(|f| {
                        f.at.format(&Rfc3339)
                            .ok()
                            .map(|at| format!("{at}: {}", f.kind))
                    }),
                    backend: c.probe.backend(),
                    primary_host: c.probe.primary_host(),
                },
            )
        });
        // Concurrent, so health costs one timeout, not the sum.
        let mut components: BTreeMap<_, _> = join_all(checks).await.into_iter().collect();
        for (name, backend) in &self.in_process {
            components.insert(
                *name,
                ComponentHealth {
                    healthy: true,
                    latency_ms: 0.0,
                    circuit_state: BreakerState::Closed,
                    failure_count: 0,
                    last_failure: None,
                    backend,
                    primary_host: None,
                },
            );
        }
        let all_healthy = components
            .values()
            .all(|c| c.healthy && c.circuit_state == BreakerState::Closed);
        let status = match (keys_ready, all_healthy) {
            (false, _) => Status::Unhealthy,
            (true, false) => Status::Degraded,
            (true, true) => Status::Healthy,
        };
        let warnings = self
            .clock
            .as_ref()
            .and_then(|c| c.warning())
            .into_iter()
            .collect();
        HealthReport {
            status,
            mode: self.modes.current(),
            version: env!("CARGO_PKG_VERSION"),
            timestamp: time::OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default(),
            components,
            warnings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report's words come from the types, as DESIGN.md §3 spells them.
    #[test]
    fn states_and_statuses_serialize_as_the_contract_spells_them() {
        for state in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ] {
            assert_eq!(
                serde_json::to_value(state).ok(),
                Some(state.as_str().into())
            );
        }
        let words: Vec<_> = [Status::Healthy, Status::Degraded, Status::Unhealthy]
            .into_iter()
            .map(|s| (serde_json::to_value(s).ok(), s.serving()))
            .collect();
        assert_eq!(
            words,
            [
                (Some("healthy".into()), true),
                (Some("degraded".into()), true),
                (Some("unhealthy".into()), false)
            ]
        );
    }
}
