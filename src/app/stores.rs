//! The first step of construction: every store opened and chosen once,
//! here, behind its trait — the SQL database for what must last, Redis or
//! process memory for the session cache and the rate limiter.

use super::StartError;
use crate::config::{Config, DatabaseBackend, Environment};
use crate::resilience::DependencyGuard;
use crate::resilience::clock::ServerClock;
use crate::store::deferred::{DeferredLog, MAX_DEFERRED, MemoryDeferredLog};
use crate::store::memory::MemorySessionCache;
use crate::store::memory_limiter::MemoryLimiter;
use crate::store::redis::RedisSessionCache;
use crate::store::redis_deferred::RedisDeferredLog;
use crate::store::redis_limiter::RedisLimiter;
use crate::store::redis_link::RedisLink;
use crate::store::sql::{PgStore, REPLICA, SqliteStore};
use crate::store::{
    ApiKeyStore, AuditStore, InvalidationLog, KeyStore, LimiterStore, Probe, RoleStore,
    SessionCache, SessionLedger, UserStore,
};
use std::sync::Arc;
use std::time::Duration;

/// Sessions the in-process cache holds before it starts dropping entries.
const MEMORY_SESSION_CAPACITY: usize = 100_000;

/// Every store, and the guards of the two dependencies behind them.
pub(super) struct Stores {
    pub db_guard: Arc<DependencyGuard>,
    pub redis_guard: Arc<DependencyGuard>,
    pub durable: Durable,
    pub shared: SharedState,
}

impl Stores {
    pub async fn open(config: &Config) -> Result<Self, StartError> {
        let db_guard = Arc::new(DependencyGuard::new(
            "database",
            config.database.timeout,
            config.breaker.for_dependency("database"),
        ));
        let redis_guard = Arc::new(DependencyGuard::new(
            "redis",
            config.redis.timeout,
            config.breaker.for_dependency("redis"),
        ));
        let durable = open_durable(config, Arc::clone(&db_guard)).await?;
        let shared = shared_state(config, Arc::clone(&redis_guard)).await?;
        Ok(Self {
            db_guard,
            redis_guard,
            durable,
            shared,
        })
    }
}

/// The SQL store behind all the durable traits.
pub(super) struct Durable {
    pub users: Arc<dyn UserStore>,
    pub ledger: Arc<dyn SessionLedger>,
    pub keys: Arc<dyn KeyStore>,
    pub api_keys: Arc<dyn ApiKeyStore>,
    pub roles: Arc<dyn RoleStore>,
    pub audit: Arc<dyn AuditStore>,
    pub invalidations: Arc<dyn InvalidationLog>,
    pub probe: Arc<dyn Probe>,
    /// The read replica's health probe and guard, when one is configured.
    pub replica: Option<(Arc<dyn Probe>, Arc<DependencyGuard>)>,
    /// PostgreSQL, whose migrations wait for it to answer (`startup`).
    pub pg: Option<Arc<PgStore>>,
    /// PostgreSQL's clock, for the skew gauge (none for SQLite).
    pub clock: Option<Arc<dyn ServerClock>>,
}

/// Opens the configured SQL database: SQLite migrated at once (a local
/// file), PostgreSQL connected lazily and migrated by `startup`, so a node
/// started during an outage stays up.
async fn open_durable(config: &Config, guard: Arc<DependencyGuard>) -> Result<Durable, StartError> {
    fn wrap<S>(store: Arc<S>) -> Durable
    where
        S: UserStore
            + SessionLedger
            + KeyStore
            + ApiKeyStore
            + RoleStore
            + AuditStore
            + InvalidationLog
            + Probe
            + 'static,
    {
        Durable {
            users: store.clone(),
            ledger: store.clone(),
            keys: store.clone(),
            api_keys: store.clone(),
            roles: store.clone(),
            audit: store.clone(),
            invalidations: store.clone(),
            probe: store,
            replica: None,
            pg: None,
            clock: None,
        }
    }
    let backend = config.database_backend().map_err(StartError::Other)?;
    match backend {
        DatabaseBackend::Postgres(hosts) => {
            let read = config.replica_hosts().map_err(StartError::Other)?;
            let mut store = PgStore::connect(&hosts, &read, config.database.pool_size, guard)?;
            if store.has_replica_host() {
                let guard = Arc::new(DependencyGuard::new(
                    REPLICA,
                    config.database.timeout,
                    config.breaker.for_dependency(REPLICA),
                ));
                store = store.with_replica(guard);
            }
            store.spawn_classifier();
            let replica = store.replica_probe();
            let store = Arc::new(store);
            let clock: Arc<dyn ServerClock> = store.clone();
            let mut durable = wrap(Arc::clone(&store));
            durable.replica = replica;
            durable.pg = Some(store);
            durable.clock = Some(clock);
            Ok(durable)
        }
        DatabaseBackend::Sqlite(path) => {
            crate::store::private_files::prepare_sqlite_file(&path)
                .map_err(|e| StartError::Other(format!("cannot prepare {path}: {e}")))?;
            let store = SqliteStore::open(&path, guard).await?;
            store.migrate().await?;
            Ok(wrap(Arc::new(store)))
        }
    }
}

/// The SQL database alone, migrated, for the one-shot commands (`holdfast
/// migrate`, `holdfast master-key rotate`).
pub(super) async fn migrated(config: &Config) -> Result<Durable, StartError> {
    // Migrations may take longer than a query; give them a generous bound.
    let guard = Arc::new(DependencyGuard::new(
        "database",
        config.database.timeout.max(Duration::from_secs(30)),
        config.breaker.for_dependency("database"),
    ));
    let durable = open_durable(config, guard).await?;
    if let Some(pg) = &durable.pg {
        pg.migrate().await?;
    }
    Ok(durable)
}

/// The session cache and the rate limiter, which live in the same place:
/// Redis when configured; process memory when not, or (development only)
/// when the configured Redis does not answer at start.
pub(super) struct SharedState {
    pub cache: Arc<dyn SessionCache>,
    pub limiter: Arc<dyn LimiterStore>,
    /// Where writes the ledger could not take wait: beside the cache, so
    /// in Redis whenever Redis is the cache (DESIGN.md §4).
    pub deferred: Arc<dyn DeferredLog>,
    pub probe: Option<Arc<dyn Probe>>,
    /// The Redis connection, for the invalidation bus.
    pub redis: Option<RedisLink>,
}

async fn shared_state(
    config: &Config,
    guard: Arc<DependencyGuard>,
) -> Result<SharedState, StartError> {
    let memory = || SharedState {
        cache: Arc::new(MemorySessionCache::new(MEMORY_SESSION_CAPACITY)),
        limiter: Arc::new(MemoryLimiter::new()),
        deferred: Arc::new(MemoryDeferredLog::new(MAX_DEFERRED)),
        probe: None,
        redis: None,
    };
    let Some(topology) = config.redis_topology().map_err(StartError::Other)? else {
        return Ok(memory());
    };
    let development = config.env == Environment::Development;
    let link = match RedisLink::connect(&topology, guard.timeout()).await {
        Ok(link) => link,
        Err(e) if development => {
            tracing::warn!(error = %e, "redis unreachable at start; development falls back to process memory");
            return Ok(memory());
        }
        Err(e) => return Err(e.into()),
    };
    let cache = Arc::new(RedisSessionCache::new(link.clone(), Arc::clone(&guard)));
    if development && let Err(e) = cache.ping().await {
        tracing::warn!(error = %e, "redis unreachable at start; development falls back to process memory");
        return Ok(memory());
    }
    probe_each_new_master(&link, &guard);
    Ok(SharedState {
        cache: cache.clone(),
        limiter: Arc::new(RedisLimiter::new(link.clone(), Arc::clone(&guard))),
        deferred: Arc::new(RedisDeferredLog::new(link.clone(), guard)),
        probe: Some(cache),
        redis: Some(link),
    })
}

/// A Sentinel failover ends what the Redis breaker opened for: the
/// failures were the old master's. An open breaker probes the new master
/// at once instead of waiting out `open_wait` (30 s by default), so logins
/// are back within seconds of the new master (DESIGN.md §4).
fn probe_each_new_master(link: &RedisLink, guard: &Arc<DependencyGuard>) {
    let Some(mut changes) = link.master_changes() else {
        return;
    };
    let guard = Arc::downgrade(guard);
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let Some(guard) = guard.upgrade() else { return };
            guard
                .breaker()
                .probe_now("Sentinel named a new Redis master");
        }
    });
}
