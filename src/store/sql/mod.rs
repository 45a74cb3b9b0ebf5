//! The durable stores on sqlx: PostgreSQL in production, SQLite embedded.
//!
//! One `SqlStore` serves both databases: each capability is written once
//! in its own file against `pool::Pool`, which hides which driver runs the
//! statement. Every query runs through the database's `DependencyGuard`,
//! and reads fall back to a read replica when one is configured. On
//! PostgreSQL, `hosts` decides which of several hosts is the primary.

mod event_logs;
mod grants;
mod hosts;
mod keys;
mod migrations;
mod pool;
mod sessions;
mod users;

use crate::config::PgHost;
use crate::resilience::failure::FailureKind;
use crate::resilience::{Call, DependencyGuard};
use crate::store::{Probe, StoreError};
use hosts::{Hosts, Role};
use pool::{Arg, Pool, Record};
use sqlx::AssertSqlSafe;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use std::sync::Arc;
use std::time::Duration;

/// The name every SQL guard, metric and health component uses.
pub const DEPENDENCY: &str = "database";

/// The health and guard name of the read replica.
pub const REPLICA: &str = "database_replica";

/// Every SQL capability (`UserStore`, `SessionLedger`, `KeyStore`, …) on
/// one database, PostgreSQL or SQLite.
pub struct SqlStore {
    pool: Pool,
    guard: Arc<DependencyGuard>,
    /// Only PostgreSQL has one, when more than one host is named.
    replica: Option<Replica>,
    /// PostgreSQL's hosts and their roles; `pool` and the replica's follow
    /// them.
    hosts: Option<Arc<Hosts>>,
}

/// The store on PostgreSQL (`connect`), as the start-up wiring names it.
pub type PgStore = SqlStore;

/// The store on SQLite (`open`), as the start-up wiring names it.
pub type SqliteStore = SqlStore;

/// A streaming read replica: where reads go while the primary cannot
/// answer. Writes never go there; they become `StoreError::ReadOnly`.
struct Replica {
    pool: Pool,
    guard: Arc<DependencyGuard>,
}

impl SqlStore {
    /// Read-only mode (`resilience::mode`): the primary's breaker is not
    /// closed and the replica's is. Then nothing waits on the primary; only
    /// the breaker's half-open probes (the health monitor's pings) reach it.
    fn read_only(&self) -> Option<&Replica> {
        self.replica
            .as_ref()
            .filter(|r| crate::resilience::mode::read_only(&self.guard, &r.guard))
    }

    /// The primary's host answered as a standby and none is out of
    /// recovery: a write would only meet SQLSTATE 25006.
    fn standby_only(&self) -> bool {
        self.hosts.as_ref().is_some_and(|h| h.roles().standby_only)
    }

    /// Lets the hosts' classifier know of an infrastructure failure.
    fn failed<T>(&self, result: &Result<T, StoreError>) {
        if let (Some(hosts), Err(e)) = (&self.hosts, result) {
            hosts.failed(e);
        }
    }

    /// A read (idempotent, so retried on fast failures): the primary, or
    /// the replica when the primary is unavailable — straight to the
    /// replica in read-only mode.
    async fn read<T, F, Fut>(&self, query: F) -> Result<T, StoreError>
    where
        F: Fn(Pool) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        if let Some(replica) = self.read_only() {
            return replica
                .guard
                .run_idempotent(|| query(replica.pool.clone()))
                .await;
        }
        let primary = self.guard.run_idempotent(|| query(self.pool.clone())).await;
        self.failed(&primary);
        match (&self.replica, primary) {
            (Some(replica), Err(e)) if e.is_unavailable() => {
                replica
                    .guard
                    .run_idempotent(|| query(replica.pool.clone()))
                    .await
            }
            (_, result) => result,
        }
    }

    /// A write, on the primary only. With a replica configured, an
    /// unavailable primary means read-only mode; in that mode, or while the
    /// only host answering is a standby, the write is refused before it
    /// starts. A standby's refusal (SQLSTATE 25006, a connection that
    /// landed on it behind a proxy) is read-only too, never a bug.
    async fn write<T, Fut>(&self, fut: Fut) -> Result<T, StoreError>
    where
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        if self.read_only().is_some() || self.standby_only() {
            return Err(StoreError::ReadOnly);
        }
        let result = self.guard.run(Call::Write, fut).await;
        self.failed(&result);
        match result {
            Err(StoreError::Unavailable {
                kind: FailureKind::Standby,
                ..
            }) => Err(StoreError::ReadOnly),
            Err(e) if e.is_unavailable() && self.replica.is_some() => Err(StoreError::ReadOnly),
            other => other,
        }
    }

    /// The rows `sql` returns, as a read (primary or replica).
    async fn read_all<T: Record>(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<T>, StoreError> {
        self.read(|pool| async move { pool.fetch_all(AssertSqlSafe(sql.to_owned()), args).await })
            .await
    }

    /// The row `sql` returns, if any, as a read (primary or replica).
    async fn read_optional<T: Record>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Option<T>, StoreError> {
        self.read(|pool| async move {
            pool.fetch_optional(AssertSqlSafe(sql.to_owned()), args)
                .await
        })
        .await
    }

    /// One statement on the primary, as a write; rows affected.
    async fn execute(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        self.write(self.pool.execute(sql, args)).await
    }

    /// Connects to PostgreSQL lazily: a pool per host (`write` from
    /// `[database] url`, `read` from `replica_url`) that opens connections
    /// on first use, each acquire bounded by the guard's timeout. Writes
    /// go to the first host until the hosts have been asked their roles.
    pub fn connect(
        write: &[PgHost],
        read: &[PgHost],
        pool_size: u32,
        guard: Arc<DependencyGuard>,
    ) -> Result<Self, StoreError> {
        let hosts = Hosts::connect(write, read, pool_size, guard.timeout())?;
        Ok(Self {
            pool: Pool::Pg(hosts.target(Role::Primary)),
            guard,
            replica: None,
            hosts: Some(hosts),
        })
    }

    /// Whether more than one PostgreSQL host is named: reads then have a
    /// replica to fall back to, which needs a guard of its own.
    pub fn has_replica_host(&self) -> bool {
        self.hosts.as_ref().is_some_and(|h| h.has_replica())
    }

    /// The replica role (a host other than the primary), behind `guard`;
    /// nothing with a single host.
    pub fn with_replica(mut self, guard: Arc<DependencyGuard>) -> Self {
        if let Some(hosts) = self.hosts.as_ref().filter(|h| h.has_replica()) {
            self.replica = Some(Replica {
                pool: Pool::Pg(hosts.target(Role::Replica)),
                guard,
            });
        }
        self
    }

    /// Starts asking the hosts their roles in the background
    /// (`hosts::spawn_classifier`); PostgreSQL only.
    pub fn spawn_classifier(&self) {
        if let Some(hosts) = &self.hosts {
            hosts::spawn_classifier(hosts, Arc::clone(&self.guard));
        }
    }

    /// The replica, as a health component.
    pub fn replica_probe(&self) -> Option<(Arc<dyn Probe>, Arc<DependencyGuard>)> {
        self.replica.as_ref().map(|r| {
            let probe: Arc<dyn Probe> = Arc::new(ReplicaProbe {
                pool: r.pool.clone(),
                guard: Arc::clone(&r.guard),
            });
            (probe, Arc::clone(&r.guard))
        })
    }

    /// Opens (creating if needed) the SQLite file in WAL mode.
    pub async fn open(path: &str, guard: Arc<DependencyGuard>) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(guard.timeout())
            .connect_with(options)
            .await
            .map_err(classify)?;
        Ok(Self {
            pool: Pool::Sqlite(pool),
            guard,
            replica: None,
            hosts: None,
        })
    }

    /// Brings the schema up to date, on the primary (the hosts are asked
    /// first). A PostgreSQL failure counts as the database being
    /// unavailable (`startup` waits for it) — unless the host is a standby
    /// whose schema is already current: then the node starts read-only. A
    /// SQLite failure, on a local file, is not something waiting fixes.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        if let Some(hosts) = &self.hosts {
            let _ = self.guard.run(Call::Read, hosts.classify()).await;
        }
        match &self.pool {
            Pool::Pg(target) => hosts::migrate(&target.current(), &migrations::postgres()).await,
            Pool::Sqlite(pool) => migrations::sqlite()
                .run(pool)
                .await
                .map_err(|e| StoreError::Corrupt(format!("migration failed: {e}"))),
        }
    }
}

/// The primary's clock, for `holdfast_clock_skew_seconds`: through the
/// database guard like every query, never retried (a retry would measure a
/// longer round trip).
#[async_trait::async_trait]
impl crate::resilience::clock::ServerClock for SqlStore {
    async fn server_epoch(&self) -> Result<f64, StoreError> {
        // Wired only for PostgreSQL; SQLite has no such function.
        self.guard
            .run(
                Call::Read,
                self.pool
                    .scalar("SELECT extract(epoch from clock_timestamp())::float8", &[]),
            )
            .await
    }
}

#[async_trait::async_trait]
impl Probe for SqlStore {
    fn name(&self) -> &'static str {
        DEPENDENCY
    }

    fn backend(&self) -> &'static str {
        self.pool.dialect().name
    }

    /// On PostgreSQL the ping asks every host its role: it is what closes
    /// the breaker again after a failover (the health monitor's probes).
    /// A lone standby answers reads, so it does not open the breaker, but
    /// health must not call it healthy: writes are refused.
    async fn ping(&self) -> Result<(), StoreError> {
        let Some(hosts) = &self.hosts else {
            return ping(&self.guard, &self.pool).await;
        };
        self.guard.run(Call::Read, hosts.classify()).await?;
        if hosts.roles().standby_only {
            return Err(StoreError::ReadOnly);
        }
        Ok(())
    }

    fn primary_host(&self) -> Option<usize> {
        self.hosts.as_ref().and_then(|h| h.primary_position())
    }

    fn standby_only(&self) -> bool {
        SqlStore::standby_only(self)
    }
}

/// Pings the replica through its own guard.
struct ReplicaProbe {
    pool: Pool,
    guard: Arc<DependencyGuard>,
}

#[async_trait::async_trait]
impl Probe for ReplicaProbe {
    fn name(&self) -> &'static str {
        REPLICA
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        ping(&self.guard, &self.pool).await
    }
}

/// `SELECT 1` through `guard`, a single attempt: health reports what a
/// caller would meet now.
async fn ping(guard: &DependencyGuard, pool: &Pool) -> Result<(), StoreError> {
    guard
        .run(Call::Read, async {
            pool.execute("SELECT 1", &[]).await?;
            Ok(())
        })
        .await
}

/// Sorts a sqlx error into an answer (conflict) or an infrastructure failure.
pub(crate) fn classify(e: sqlx::Error) -> StoreError {
    let unavailable = |kind: FailureKind, reason: String| StoreError::Unavailable {
        dependency: DEPENDENCY,
        kind,
        reason,
    };
    match e {
        sqlx::Error::Io(ref io) => unavailable(FailureKind::of_io(io.kind()), e.to_string()),
        sqlx::Error::Tls(_) => unavailable(FailureKind::Tls, e.to_string()),
        sqlx::Error::Protocol(_) => unavailable(FailureKind::InvalidResponse, e.to_string()),
        sqlx::Error::PoolTimedOut => unavailable(FailureKind::PoolExhausted, e.to_string()),
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            unavailable(FailureKind::Other, e.to_string())
        }
        sqlx::Error::Database(db) => {
            if db.is_unique_violation() {
                let text = format!("{} {}", db.constraint().unwrap_or(""), db.message());
                let field = if text.contains("email") {
                    "email"
                } else if text.contains("username") {
                    "username"
                } else if text.contains("signing_keys") {
                    "active_key"
                } else {
                    "unique"
                };
                return StoreError::Conflict(field);
            }
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            // 08xxx connection exceptions, 57P0x shutdown, 53xxx resources;
            // SQLite 5/6 busy or locked.
            let infrastructure = code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || code == "5"
                || code == "6";
            if code == "25006" {
                // read_only_sql_transaction: a standby answered a write.
                unavailable(FailureKind::Standby, db.to_string())
            } else if infrastructure {
                unavailable(FailureKind::ServerUnavailable, db.to_string())
            } else {
                StoreError::Corrupt(db.to_string())
            }
        }
        other => StoreError::Corrupt(other.to_string()),
    }
}
