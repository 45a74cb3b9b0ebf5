//! The durable stores on sqlx: PostgreSQL in production, SQLite embedded.
//!
//! The SQL text is the same for both (BIGINT times, `$N` placeholders, which
//! sqlx's SQLite driver binds by number), so each capability is written once
//! as a `macro_rules!` body in its own file and stamped out for `PgStore` and
//! `SqliteStore`. Generic code over `sqlx::Database` would need a bound per
//! bound type on every method; the macro keeps the queries readable.
//! Every query runs through the database's `DependencyGuard`.

mod keys;
mod sessions;
mod users;

use crate::resilience::DependencyGuard;
use crate::store::StoreError;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, SqlSafeStr, SqlitePool};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The name every SQL guard, metric and health component uses.
pub const DEPENDENCY: &str = "database";

pub struct PgStore {
    pool: PgPool,
    guard: Arc<DependencyGuard>,
}

pub struct SqliteStore {
    pool: SqlitePool,
    guard: Arc<DependencyGuard>,
}

impl PgStore {
    /// Connects lazily: the pool opens connections on first use, each
    /// acquire bounded by the guard's timeout.
    pub fn connect(
        url: &str,
        pool_size: u32,
        guard: Arc<DependencyGuard>,
    ) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Corrupt(format!("bad database url: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(guard.timeout())
            .connect_lazy_with(options);
        Ok(Self { pool, guard })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        postgres_migrator()
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Unavailable {
                dependency: DEPENDENCY,
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
        Ok(Self { pool, guard })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlite_migrator()
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Corrupt(format!("migration failed: {e}")))
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
    let unavailable = |reason: String| StoreError::Unavailable {
        dependency: DEPENDENCY,
        reason,
    };
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => unavailable(e.to_string()),
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
                unavailable(db.to_string())
            } else {
                StoreError::Corrupt(db.to_string())
            }
        }
        other => StoreError::Corrupt(other.to_string()),
    }
}
