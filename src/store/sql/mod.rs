//! The durable stores on sqlx: PostgreSQL in production, SQLite embedded.
//!
//! The SQL text is the same for both (BIGINT times, `$N` placeholders, which
//! sqlx's SQLite driver binds by number), so each capability is written once
//! as a `macro_rules!` body in its own file and stamped out for `PgStore` and
//! `SqliteStore`. Generic code over `sqlx::Database` would need a bound per
//! bound type on every method; the macro keeps the queries readable.
//! Every query runs through the database's `DependencyGuard`.

mod access;
mod keys;
mod sessions;
mod users;

use crate::resilience::failure::FailureKind;
use crate::resilience::{Call, DependencyGuard};
use crate::store::{Probe, StoreError};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, SqlSafeStr, SqlitePool};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The name every SQL guard, metric and health component uses.
pub const DEPENDENCY: &str = "database";

/// The health and guard name of the read replica.
pub const REPLICA: &str = "database_replica";

pub struct PgStore {
    pool: PgPool,
    guard: Arc<DependencyGuard>,
    replica: Option<Replica<PgPool>>,
}

pub struct SqliteStore {
    pool: SqlitePool,
    guard: Arc<DependencyGuard>,
    /// Always `None`; present so both stores share the routing code.
    replica: Option<Replica<SqlitePool>>,
}

/// A streaming read replica: where reads go while the primary cannot
/// answer. Writes never go there; they become `StoreError::ReadOnly`.
pub struct Replica<P> {
    pool: P,
    guard: Arc<DependencyGuard>,
}

/// Read/write routing, the same for both stores.
macro_rules! routing {
    ($store:ty, $pool:ty) => {
        impl $store {
            /// Read-only mode (`resilience::mode`): the primary's breaker
            /// is not closed and the replica's is. Then nothing waits on
            /// the primary; only the breaker's half-open probes (the
            /// health monitor's pings) reach it.
            fn read_only(&self) -> Option<&Replica<$pool>> {
                self.replica
                    .as_ref()
                    .filter(|r| crate::resilience::mode::read_only(&self.guard, &r.guard))
            }

            /// A read (idempotent, so retried on fast failures): the
            /// primary, or the replica when the primary is unavailable —
            /// straight to the replica in read-only mode.
            async fn read<T, F, Fut>(&self, query: F) -> Result<T, StoreError>
            where
                F: Fn($pool) -> Fut,
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
            /// unavailable primary means read-only mode; in that mode the
            /// write is refused before it starts.
            async fn write<T, Fut>(&self, fut: Fut) -> Result<T, StoreError>
            where
                Fut: std::future::Future<Output = Result<T, StoreError>>,
            {
                if self.read_only().is_some() {
                    return Err(StoreError::ReadOnly);
                }
                match self.guard.run(Call::Write, fut).await {
                    Err(e) if e.is_unavailable() && self.replica.is_some() => {
                        Err(StoreError::ReadOnly)
                    }
                    other => other,
                }
            }
        }
    };
}
routing!(PgStore, PgPool);
routing!(SqliteStore, SqlitePool);

impl PgStore {
    /// Connects lazily: the pool opens connections on first use, each
    /// acquire bounded by the guard's timeout.
    pub fn connect(
        url: &str,
        pool_size: u32,
        guard: Arc<DependencyGuard>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            pool: pg_pool(url, pool_size, &guard)?,
            guard,
            replica: None,
        })
    }

    /// Adds a read replica with its own pool and guard.
    pub fn with_replica(
        mut self,
        url: &str,
        pool_size: u32,
        guard: Arc<DependencyGuard>,
    ) -> Result<Self, StoreError> {
        self.replica = Some(Replica {
            pool: pg_pool(url, pool_size, &guard)?,
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

    pub async fn migrate(&self) -> Result<(), StoreError> {
        postgres_migrator()
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Unavailable {
                dependency: DEPENDENCY,
                kind: FailureKind::of_error(&e),
                reason: format!("migration failed: {e}"),
            })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl SqliteStore {
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
            pool,
            guard,
            replica: None,
        })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlite_migrator()
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Corrupt(format!("migration failed: {e}")))
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
impl crate::resilience::clock::ServerClock for PgStore {
    async fn server_epoch(&self) -> Result<f64, StoreError> {
        self.guard
            .run(Call::Read, async {
                sqlx::query_scalar::<_, f64>("SELECT extract(epoch from clock_timestamp())::float8")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(classify)
            })
            .await
    }
}

/// Pings the replica through its own guard.
struct ReplicaProbe {
    pool: PgPool,
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
        self.guard
            .run(Call::Read, async {
                sqlx::query("SELECT 1")
                    .execute(&self.pool)
                    .await
                    .map_err(classify)?;
                Ok(())
            })
            .await
    }
}

/// Migrations are compiled into the binary so a deployed `holdfast` needs no
/// migrations folder beside it.
fn postgres_migrator() -> Migrator {
    Migrator::with_migrations(vec![
        migration(
            1,
            "init",
            include_str!("../../../migrations/postgres/0001_init.sql"),
        ),
        migration(
            2,
            "session roles",
            include_str!("../../../migrations/postgres/0002_session_roles.sql"),
        ),
        migration(
            3,
            "key schedule",
            include_str!("../../../migrations/postgres/0003_key_schedule.sql"),
        ),
        migration(
            4,
            "access",
            include_str!("../../../migrations/postgres/0004_access.sql"),
        ),
        migration(
            5,
            "security version",
            include_str!("../../../migrations/postgres/0005_security_version.sql"),
        ),
        migration(
            6,
            "password normalization",
            include_str!("../../../migrations/postgres/0006_password_normalization.sql"),
        ),
    ])
}

fn sqlite_migrator() -> Migrator {
    Migrator::with_migrations(vec![
        migration(
            1,
            "init",
            include_str!("../../../migrations/sqlite/0001_init.sql"),
        ),
        migration(
            2,
            "session roles",
            include_str!("../../../migrations/sqlite/0002_session_roles.sql"),
        ),
        migration(
            3,
            "key schedule",
            include_str!("../../../migrations/sqlite/0003_key_schedule.sql"),
        ),
        migration(
            4,
            "access",
            include_str!("../../../migrations/sqlite/0004_access.sql"),
        ),
        migration(
            5,
            "security version",
            include_str!("../../../migrations/sqlite/0005_security_version.sql"),
        ),
        migration(
            6,
            "password normalization",
            include_str!("../../../migrations/sqlite/0006_password_normalization.sql"),
        ),
    ])
}

fn migration(version: i64, description: &'static str, sql: &'static str) -> Migration {
    Migration::new(
        version,
        description.into(),
        MigrationType::Simple,
        sql.into_sql_str(),
        false,
    )
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
