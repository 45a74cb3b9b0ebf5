//! Builds `AppState` from the configuration, in three steps — the stores
//! (`stores`), the domain services over them (`domain`), then what the
//! health view watches (`health`) — and the `Router`s that serve it.
//! Every backend is chosen once, here, behind its trait; handlers reach
//! domain services only.

mod backlogs;
mod domain;
mod health;
pub mod startup;
mod stores;

use crate::auth::accounts::Accounts;
use crate::auth::api_keys::ApiKeys;
use crate::auth::audit::Audit;
use crate::auth::emergency::EmergencyVerifier;
use crate::auth::error::KeyError;
use crate::auth::external::ExternalIdps;
use crate::auth::key_rotation::KeyRotation;
use crate::auth::keys::KeyRing;
use crate::auth::master_key::MasterKey;
use crate::auth::rate_limit::RateLimits;
use crate::auth::rbac::Rbac;
use crate::auth::revocation::RevocationSet;
use crate::auth::sessions::Sessions;
use crate::auth::tokens::AccessTokens;
use crate::auth::validation_cache::ValidationCache;
use crate::config::{Config, ConfigError};
use crate::resilience::DependencyGuard;
use crate::resilience::health::HealthMonitor;
use crate::store::{StoreError, UserStore};
pub use backlogs::{Backlog, Backlogs};
use domain::Domain;
use startup::{Readiness, Startup};
use std::sync::Arc;
use std::time::Duration;
use stores::Stores;

/// Everything a request may need, behind one `Arc`: axum clones the state
/// for every request, so cloning must be one reference-count increment
/// (a dozen `Arc`s and a `Vec` were a measurable share of a verification:
/// docs/performance.md, "Figures behind the code").
#[derive(Clone)]
pub struct AppState(Arc<Components>);

impl std::ops::Deref for AppState {
    type Target = Components;

    fn deref(&self) -> &Components {
        &self.0
    }
}

/// The domain services and the operator's views. No store is reachable
/// from a handler (the one kept is for tests): a handler that needs one
/// needs a domain operation instead.
pub struct Components {
    config: Arc<Config>,
    accounts: Arc<Accounts>,
    sessions: Arc<Sessions>,
    tokens: Arc<AccessTokens>,
    keys: Arc<KeyRing>,
    /// Rotate and revoke-all, announced and audited.
    key_rotation: Arc<KeyRotation>,
    revocations: Arc<RevocationSet>,
    limits: Arc<RateLimits>,
    health: Arc<HealthMonitor>,
    /// The guards of the dependencies in use, for the operator view.
    guards: Vec<Arc<DependencyGuard>>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Break-glass verification, when `[emergency]` is configured.
    emergency: Option<Arc<EmergencyVerifier>>,
    api_keys: Arc<ApiKeys>,
    rbac: Arc<Rbac>,
    audit: Arc<Audit>,
    validation: Arc<ValidationCache>,
    /// Upstream issuers (`[[idp]]`); empty when none is configured.
    external: Arc<ExternalIdps>,
    /// Set once keys and revocations are loaded (`startup`).
    ready: Arc<Readiness>,
    /// What waits for PostgreSQL, for the status page.
    backlogs: Backlogs,
    /// See `user_store`.
    users: Arc<dyn UserStore>,
}

impl Components {
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn accounts(&self) -> &Arc<Accounts> {
        &self.accounts
    }

    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    pub fn tokens(&self) -> &Arc<AccessTokens> {
        &self.tokens
    }

    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    pub fn key_rotation(&self) -> &Arc<KeyRotation> {
        &self.key_rotation
    }

    pub fn revocations(&self) -> &Arc<RevocationSet> {
        &self.revocations
    }

    pub fn limits(&self) -> &Arc<RateLimits> {
        &self.limits
    }

    pub fn health(&self) -> &Arc<HealthMonitor> {
        &self.health
    }

    pub fn guards(&self) -> &[Arc<DependencyGuard>] {
        &self.guards
    }

    pub fn metrics(&self) -> &metrics_exporter_prometheus::PrometheusHandle {
        &self.metrics
    }

    pub fn emergency(&self) -> Option<&Arc<EmergencyVerifier>> {
        self.emergency.as_ref()
    }

    pub fn api_keys(&self) -> &Arc<ApiKeys> {
        &self.api_keys
    }

    pub fn rbac(&self) -> &Arc<Rbac> {
        &self.rbac
    }

    pub fn audit(&self) -> &Arc<Audit> {
        &self.audit
    }

    pub fn validation(&self) -> &Arc<ValidationCache> {
        &self.validation
    }

    pub fn external(&self) -> &Arc<ExternalIdps> {
        &self.external
    }

    pub fn ready(&self) -> &Arc<Readiness> {
        &self.ready
    }

    pub fn backlogs(&self) -> &Backlogs {
        &self.backlogs
    }

    /// The user store itself, for tests that seed users as a store holds
    /// them; the service reaches users through `Accounts` only.
    #[doc(hidden)]
    pub fn user_store(&self) -> &Arc<dyn UserStore> {
        &self.users
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{0}")]
    Other(String),
}

/// Runs the migrations only (`holdfast migrate`).
pub async fn migrate(config: &Config) -> Result<(), StartError> {
    stores::migrated(config).await.map(drop)
}

/// `holdfast master-key rotate --new FILE`: re-seals every private signing
/// key under the key in FILE (see `master_key::rotate`).
pub async fn rotate_master_key(
    config: &Config,
    new_file: &std::path::Path,
) -> Result<usize, StartError> {
    let old = MasterKey::load(config)?;
    let new = MasterKey::read_file(new_file)?;
    let durable = stores::migrated(config).await?;
    Ok(crate::auth::master_key::rotate(durable.keys.as_ref(), &old, &new).await?)
}

impl AppState {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let config = Arc::new(config);
        // First: series set while the guards are built (every breaker's
        // state) must reach the recorder to exist from the first scrape.
        let metrics = crate::telemetry::metrics_handle();
        let master = MasterKey::load(&config)?;
        let stores = Stores::open(&config).await?;
        let domain = Domain::build(&config, &stores, master)?;
        let ready = Arc::new(Readiness::default());
        start(&config, &stores, &domain, &ready).await?;
        if let Some(link) = &stores.shared.redis {
            domain
                .bus
                .spawn_subscriber(link.clone(), config.redis.timeout);
        }
        let leeway = config.tokens.leeway.as_secs();
        let external = Arc::new(ExternalIdps::start(&config, leeway).map_err(StartError::Other)?);
        let (guards, health) = health::monitor(&config, &stores, &external);
        let emergency = domain::emergency(&config)?;
        spawn_revocation_purge(Arc::clone(&domain.revocations));
        spawn_metrics_upkeep(metrics.clone());
        let Domain {
            accounts,
            sessions,
            tokens,
            keys,
            key_rotation,
            revocations,
            limits,
            api_keys,
            rbac,
            audit,
            bus,
            validation,
        } = domain;
        let backlogs = Backlogs {
            sessions: Arc::clone(&stores.shared.deferred),
            audit: Arc::clone(&audit),
            bus,
        };
        Ok(Self(Arc::new(Components {
            config,
            accounts,
            sessions,
            tokens,
            keys,
            key_rotation,
            revocations,
            limits,
            health,
            guards,
            metrics,
            emergency,
            api_keys,
            rbac,
            audit,
            validation,
            external,
            ready,
            backlogs,
            users: Arc::clone(&stores.durable.users),
        })))
    }

    /// What an operator may change without a restart (SIGHUP): the
    /// configuration is read again and the emergency deny list swapped in;
    /// everything else keeps its start-up value. On an error nothing
    /// changes. No store is involved, so it works during an outage.
    pub fn reload(&self, file: Option<&std::path::Path>) -> Result<(), ConfigError> {
        let config = Config::load(file)?;
        if let Some(emergency) = &self.emergency {
            emergency.set_denied(&config.emergency.deny_jti);
        } else if !config.emergency.deny_jti.is_empty() {
            tracing::warn!("[emergency] deny_jti set, but emergency tokens are off on this node");
        }
        Ok(())
    }
}

/// Loads keys and revocations and starts the invalidation poller
/// (`startup`): at once when PostgreSQL answers, in the background when not.
async fn start(
    config: &Config,
    stores: &Stores,
    domain: &Domain,
    ready: &Arc<Readiness>,
) -> Result<(), StartError> {
    let durable = &stores.durable;
    let horizon = (config.tokens.access_ttl + config.tokens.leeway).as_secs();
    Startup {
        pg: durable.pg.clone(),
        db_guard: Arc::clone(&stores.db_guard),
        keys: Arc::clone(&domain.keys),
        key_refresh: key_refresh_interval(config),
        revocations: Arc::clone(&domain.revocations),
        ledger: Arc::clone(&durable.ledger),
        deferred: Arc::clone(&stores.shared.deferred),
        users: Arc::clone(&durable.users),
        invalidations: Arc::clone(&durable.invalidations),
        bus: Arc::clone(&domain.bus),
        poll: config.cache.invalidation_poll,
        poll_retention: Duration::from_secs(horizon.max(24 * 3600)),
        ready: Arc::clone(ready),
    }
    .run()
    .await
}

/// How often each node re-reads the signing keys: often enough that a
/// standby is promoted and another node's revoke-all is honoured within
/// seconds, at most every 10 s.
fn key_refresh_interval(config: &Config) -> Duration {
    (config.tokens.jwks_max_age / 4).clamp(Duration::from_millis(200), Duration::from_secs(10))
}

fn spawn_revocation_purge(revocations: Arc<RevocationSet>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            revocations.purge(crate::auth::now());
        }
    });
}

/// Drains recorded histogram samples into their buckets. Without it the
/// Prometheus recorder keeps every sample until `/metrics` is scraped:
/// memory grew by ~200 MB over a one-minute load test with no scraper.
/// Every second: each sample costs a few bytes until drained, so a longer
/// interval holds more memory under load.
fn spawn_metrics_upkeep(handle: metrics_exporter_prometheus::PrometheusHandle) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
}
