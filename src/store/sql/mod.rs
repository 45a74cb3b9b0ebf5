//! The durable stores on sqlx: PostgreSQL in production, SQLite embedded.
//!
//! One `SqlStore` serves both databases: each capability is written once
//! in its own file against `pool::Pool`, which hides which driver runs the
//! statement. Every query runs through the database's `DependencyGuard`,
//! and reads fall back to a read replica when one is configured.

mod event_logs;
mod grants;
mod keys;
mod migrations;
mod pool;
mod sessions;
mod users;

use crate::resilience::failure::FailureKind;
use crate::resilience::{Call, DependencyGuard};
use crate::store::{Probe, StoreError};
use pool::{Arg, Pool, Record};
use sqlx::AssertSqlSafe;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use std::str::FromStr;
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
    /// Only PostgreSQL has one.
    replica: Option<Replica>,
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
    /// unavailable primary means read-only mode; in that mode the write is
    /// refused before it starts.
    async fn write<T, Fut>(&self, fut: Fut) -> Result<T, StoreError>
    where
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        if self.read_only().is_some() {
            return Err(StoreError::ReadOnly);
        }
        match self.guard.run(Call::Write, fut).await {
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

    /// Connects to PostgreSQL lazily: the pool opens connections on first
    /// use, each acquire bounded by the guard's timeout.
    pub fn connect(
        url: &str,
        pool_size: u32,
        guard: Arc<DependencyGuard>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            pool: Pool::Pg(pg_pool(url, pool_size, &guard)?),
            guard,
            replica: None,
        })
    }

    /// Adds a PostgreSQL read replica with its own pool and guard.
    pub fn with_replica(
        mut self,
        url: &str,
        pool_size: u32,
        guard: Arc<DependencyGuard>,
    ) -> Result<Self, StoreError> {
        self.replica = Some(Replica {
            pool: Pool::Pg(pg_pool(url, pool_size, &guard)?),
            guard,
        });
        Ok(self)
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
        })
    }

    /// Brings the schema up to date. A PostgreSQL failure counts as the
    /// database being unavailable (`startup` waits for it); a SQLite one,
    /// on a local file, is not something waiting fixes.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Pg(pool) => {
                migrations::postgres()
                    .run(pool)
                    .await
                    .map_err(|e| StoreError::Unavailable {
                        dependency: DEPENDENCY,
                        kind: FailureKind::of_error(&e),
                        reason: format!("migration failed: {e}"),
                    })
            }
            Pool::Sqlite(pool) => migrations::sqlite()
                .run(pool)
                .await
                .map_err(|e| StoreError::Corrupt(format!("migration failed: {e}"))),
        }
    }
}

/// Connects lazily: the pool opens connections on first use, each acquire
/// bounded by the guard's timeout.
fn pg_pool(url: &str, size: u32, guard: &DependencyGuard) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Corrupt(format!("bad database url: {e}")))?;
    Ok(PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(guard.timeout())
        .connect_lazy_with(options))
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

    async fn ping(&self) -> Result<(), StoreError> {
        ping(&self.guard, &self.pool).await
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
            if infrastructure {
                unavailable(FailureKind::ServerUnavailable, db.to_string())
            } else {
                StoreError::Corrupt(db.to_string())
            }
        }
        other => StoreError::Corrupt(other.to_string()),
    }
}
