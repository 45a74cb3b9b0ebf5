//! The PostgreSQL hosts behind one `SqlStore`, and which of them does what
//! now. sqlx's options hold one host and ignore `target_session_attrs`
//! (DEPENDENCIES.md trap 13), so holdfast keeps one pool per host of
//! `[database] url` (and of `replica_url`, which are read hosts only) and
//! asks each `pg_is_in_recovery()`: writes go to the one that says no,
//! reads fall back to another while the primary cannot answer. The hosts
//! are asked again after a connection failure, on a standby's refusal
//! (SQLSTATE 25006) and periodically, so a promotion is followed without
//! a restart.

use super::{DEPENDENCY, classify};
use crate::config::PgHost;
use crate::resilience::breaker::BreakerState;
use crate::resilience::failure::FailureKind;
use crate::resilience::{Call, DependencyGuard};
use crate::store::StoreError;
use futures::future::join_all;
use parking_lot::RwLock;
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How often the hosts are asked their role while nothing prompts it: a
/// change that causes no failure here (a switchover behind our back) is
/// noticed within this.
pub const CLASSIFY_EVERY: Duration = Duration::from_secs(5);

/// The least time between two classifications, so a burst of failures
/// asks the hosts once.
const CLASSIFY_SPACING: Duration = Duration::from_millis(250);

/// One PostgreSQL host with its own pool.
struct Host {
    /// `host:port`, for logs (never the URL: it may hold a password).
    label: String,
    pool: PgPool,
    /// Named by `[database] url`: may take writes (not a `replica_url` host).
    writable: bool,
}

/// Which host does what now; indices into the host list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Where writes go: the host last seen out of recovery (the first one
    /// until the hosts have been asked).
    pub primary: usize,
    /// Whether `primary` was out of recovery when last asked.
    pub primary_seen: bool,
    /// `primary` answered as a standby and no host is out of recovery: a
    /// write would only meet SQLSTATE 25006, so it is refused before it
    /// starts (read-only mode behind a proxy or DNS name).
    pub standby_only: bool,
    /// Where reads go while the primary cannot answer.
    pub replica: Option<usize>,
}

/// Every host and its role; shared by the store's pool handles.
pub struct Hosts {
    hosts: Vec<Host>,
    roles: RwLock<Roles>,
    /// Rung by failures that may mean the roles changed.
    wake: Arc<Notify>,
    /// Bounds each host's answer, below the guard's timeout so that one
    /// hung host does not cost the whole classification.
    ask_timeout: Duration,
}

/// Which role a pool handle follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

/// The pool of whichever host holds `role` at the time of each call.
#[derive(Clone)]
pub struct PgTarget {
    hosts: Arc<Hosts>,
    role: Role,
}

impl PgTarget {
    /// The pool of the host holding the role now (the primary's when no
    /// other host exists).
    pub fn current(&self) -> PgPool {
        let roles = *self.hosts.roles.read();
        let index = match self.role {
            Role::Primary => roles.primary,
            Role::Replica => roles.replica.unwrap_or(roles.primary),
        };
        self.hosts.hosts[index].pool.clone()
    }

    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        self.current().acquire().await
    }

    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.current().begin().await
    }
}

impl Hosts {
    /// One lazy pool per host: connections open on first use, each
    /// acquire bounded by `timeout`.
    pub fn connect(
        write: &[PgHost],
        read: &[PgHost],
        size: u32,
        timeout: Duration,
    ) -> Result<Arc<Self>, StoreError> {
        let named = write.iter().map(|h| (h, true));
        let hosts = named
            .chain(read.iter().map(|h| (h, false)))
            .map(|(host, writable)| {
                let options = PgConnectOptions::from_str(host.url.expose()).map_err(|_| {
                    StoreError::Corrupt(format!("bad database url for {}", host.label))
                })?;
                let pool = PgPoolOptions::new()
                    .max_connections(size)
                    .acquire_timeout(timeout)
                    .connect_lazy_with(options);
                Ok(Host {
                    label: host.label.clone(),
                    pool,
                    writable,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        if hosts.is_empty() {
            return Err(StoreError::Corrupt("database url names no host".into()));
        }
        let roles = Roles {
            primary: 0,
            primary_seen: false,
            standby_only: false,
            replica: (hosts.len() > 1).then_some(write.len().min(hosts.len() - 1).max(1)),
        };
        Ok(Arc::new(Self {
            hosts,
            roles: RwLock::new(roles),
            wake: Arc::new(Notify::new()),
            ask_timeout: timeout.mul_f32(0.75),
        }))
    }

    pub fn target(self: &Arc<Self>, role: Role) -> PgTarget {
        PgTarget {
            hosts: Arc::clone(self),
            role,
        }
    }

    /// More than one host: reads have somewhere to fall back to.
    pub fn has_replica(&self) -> bool {
        self.hosts.len() > 1
    }

    pub fn roles(&self) -> Roles {
        *self.roles.read()
    }

    /// The primary's position in `[database] url` (1 = first), once seen.
    pub fn primary_position(&self) -> Option<usize> {
        let roles = self.roles();
        roles.primary_seen.then_some(roles.primary + 1)
    }

    /// A call failed with `e`: asks the hosts again when that may mean
    /// their roles changed (a standby's refusal, or with several hosts a
    /// connection failure).
    pub fn failed(&self, e: &StoreError) {
        let prompts = match e {
            StoreError::Unavailable { kind, .. } => {
                *kind == FailureKind::Standby || self.has_replica()
            }
            _ => false,
        };
        if prompts {
            self.wake.notify_one();
        }
    }

    /// Asks every host its role at once and records the answer. Fails as
    /// the primary's host does, and when several hosts may take writes and
    /// none is out of recovery (the primary does not answer; with a
    /// single host, a standby is `standby_only` and still serves reads).
    pub async fn classify(&self) -> Result<(), StoreError> {
        let asks = self.hosts.iter().map(|h| self.ask(&h.pool));
        let mut answers: Vec<Result<bool, StoreError>> = join_all(asks).await;
        let seen: Vec<Option<bool>> = answers.iter().map(|a| a.as_ref().ok().copied()).collect();
        let writable: Vec<bool> = self.hosts.iter().map(|h| h.writable).collect();
        let next = {
            let mut roles = self.roles.write();
            let before = *roles;
            *roles = decide(before, &seen, &writable);
            (before, *roles)
        };
        self.log_change(next.0, next.1);
        let roles = next.1;
        let writable_hosts = writable.iter().filter(|w| **w).count();
        match answers.swap_remove(roles.primary) {
            Err(e) => Err(e),
            Ok(_) if !roles.primary_seen && writable_hosts > 1 => Err(StoreError::Unavailable {
                dependency: DEPENDENCY,
                kind: FailureKind::Standby,
                reason: "no host of [database] url is out of recovery".into(),
            }),
            Ok(_) => Ok(()),
        }
    }

    /// `pg_is_in_recovery()` of one host, bounded by `ask_timeout`.
    async fn ask(&self, pool: &PgPool) -> Result<bool, StoreError> {
        let query = sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()").fetch_one(pool);
        match tokio::time::timeout(self.ask_timeout, query).await {
            Ok(answer) => answer.map_err(classify),
            Err(_) => Err(StoreError::Unavailable {
                dependency: DEPENDENCY,
                kind: FailureKind::Timeout,
                reason: format!("no role answer within {:?}", self.ask_timeout),
            }),
        }
    }

    fn log_change(&self, before: Roles, after: Roles) {
        let label = |i: usize| self.hosts[i].label.as_str();
        let (now, was) = (label(after.primary), label(before.primary));
        if after.primary_seen && (!before.primary_seen || before.primary != after.primary) {
            if before.primary != after.primary {
                tracing::warn!(
                    primary = now,
                    was,
                    "database primary moved to {now} (was {was})"
                );
            } else {
                tracing::info!(primary = now, "database primary: {now}");
            }
        } else if before.primary_seen && !after.primary_seen {
            tracing::warn!(
                was = now,
                "no database host is out of recovery: reads use a standby, writes answer read-only"
            );
        }
        if after.standby_only && !before.standby_only {
            tracing::warn!(
                host = now,
                "the database host answers as a standby: read-only until a primary appears"
            );
        }
    }
}

/// The roles after the hosts answered `seen` (`Some(in_recovery)`, `None`
/// for no answer). The current primary keeps its role while it is out of
/// recovery (two primaries are a split brain: the one writes went to
/// stays); otherwise the first writable host out of recovery takes it;
/// with none, the role stays where it was, so writes keep failing there
/// and the breaker, not a guess, decides.
fn decide(old: Roles, seen: &[Option<bool>], writable: &[bool]) -> Roles {
    let n = seen.len();
    let out_of_recovery = |i: usize| writable[i] && seen[i] == Some(false);
    let found = if out_of_recovery(old.primary) {
        Some(old.primary)
    } else {
        (0..n).find(|&i| out_of_recovery(i))
    };
    let primary = found.unwrap_or(old.primary);
    let answering = |i: usize| i != primary && seen[i].is_some();
    let replica = old
        .replica
        .filter(|&i| answering(i))
        .or_else(|| (0..n).find(|&i| answering(i)))
        .or_else(|| old.replica.filter(|&i| i != primary))
        .or_else(|| (0..n).find(|&i| i != primary));
    Roles {
        primary,
        primary_seen: found.is_some(),
        standby_only: found.is_none() && seen[primary] == Some(true),
        replica,
    }
}

/// Re-asks the hosts every `CLASSIFY_EVERY` (with several hosts, or while
/// the only one is a standby) and whenever `Hosts::failed` rings, through
/// the database guard. Only while the guard's breaker is closed: when it is
/// not, the health monitor's probes classify (`SqlStore`'s ping), and they
/// are what closes it. Ends when the hosts are dropped.
pub fn spawn_classifier(hosts: &Arc<Hosts>, guard: Arc<DependencyGuard>) {
    let weak = Arc::downgrade(hosts);
    let wake = Arc::clone(&hosts.wake);
    tokio::spawn(async move {
        let mut prompted = true;
        loop {
            let Some(hosts) = weak.upgrade() else {
                return;
            };
            let periodic = hosts.has_replica() || hosts.roles().standby_only;
            if (prompted || periodic) && guard.breaker().state() == BreakerState::Closed {
                let _ = guard.run(Call::Read, hosts.classify()).await;
            }
            // Not held while waiting: the store may be dropped meanwhile.
            drop(hosts);
            tokio::time::sleep(CLASSIFY_SPACING).await;
            prompted = tokio::time::timeout(CLASSIFY_EVERY, wake.notified())
                .await
                .is_ok();
        }
    });
}

/// Runs `migrator` on `pool`, the primary's. A failure counts as the
/// database being unavailable (`startup` waits for it) — unless the host
/// is a standby whose schema is already current: a node started behind a
/// proxy that points at a standby then serves read-only instead of
/// waiting for a primary.
pub async fn migrate(pool: &PgPool, migrator: &Migrator) -> Result<(), StoreError> {
    let Err(e) = migrator.run(pool).await else {
        return Ok(());
    };
    if standby_is_migrated(pool, migrator).await {
        tracing::warn!("the database host is a standby with a current schema: starting read-only");
        return Ok(());
    }
    Err(StoreError::Unavailable {
        dependency: DEPENDENCY,
        kind: FailureKind::of_error(&e),
        reason: format!("migration failed: {e}"),
    })
}

/// Whether `pool`'s host is a standby whose schema has every migration of
/// `migrator`.
async fn standby_is_migrated(pool: &PgPool, migrator: &Migrator) -> bool {
    let recovering = sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()")
        .fetch_one(pool)
        .await
        .unwrap_or(false);
    if !recovering {
        return false;
    }
    let applied: Vec<i64> =
        sqlx::query_scalar::<_, i64>("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    migrator.iter().all(|m| applied.contains(&m.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_WRITABLE: [bool; 2] = [true, true];

    fn roles(primary: usize, seen: bool, replica: Option<usize>) -> Roles {
        Roles {
            primary,
            primary_seen: seen,
            standby_only: false,
            replica,
        }
    }

    #[test]
    fn the_host_out_of_recovery_takes_writes() {
        let start = roles(0, false, Some(1));
        let got = decide(start, &[Some(true), Some(false)], &TWO_WRITABLE);
        assert_eq!(got, roles(1, true, Some(0)));
    }

    #[test]
    fn a_dead_primary_keeps_its_role_until_a_standby_is_promoted() {
        let before = roles(0, true, Some(1));
        let during = decide(before, &[None, Some(true)], &TWO_WRITABLE);
        assert_eq!(during, roles(0, false, Some(1)));
        let after = decide(during, &[None, Some(false)], &TWO_WRITABLE);
        assert_eq!(
            after,
            roles(1, true, Some(0)),
            "the dead host is all that is left"
        );
    }

    #[test]
    fn the_current_primary_stays_through_a_split_brain() {
        let before = roles(1, true, Some(0));
        let got = decide(before, &[Some(false), Some(false)], &TWO_WRITABLE);
        assert_eq!(got, roles(1, true, Some(0)));
    }

    #[test]
    fn a_lone_standby_is_standby_only() {
        let got = decide(roles(0, false, None), &[Some(true)], &[true]);
        assert!(got.standby_only && !got.primary_seen, "{got:?}");
        let promoted = decide(got, &[Some(false)], &[true]);
        assert_eq!(promoted, roles(0, true, None));
    }

    #[test]
    fn a_replica_url_host_never_takes_writes() {
        let got = decide(
            roles(0, true, Some(1)),
            &[None, Some(false)],
            &[true, false],
        );
        assert_eq!(got, roles(0, false, Some(1)));
    }
}
