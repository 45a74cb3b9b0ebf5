//! The second step of construction: the domain services over the stores,
//! wired to each other and to the invalidation bus.

use super::StartError;
use super::stores::Stores;
use crate::auth::accounts::Accounts;
use crate::auth::api_keys::ApiKeys;
use crate::auth::audit::Audit;
use crate::auth::emergency::EmergencyVerifier;
use crate::auth::key_rotation::{KeyRotation, ReloadOnChange};
use crate::auth::keys::{KeyKind, KeyRing, KeySchedule};
use crate::auth::master_key::MasterKey;
use crate::auth::passwords::PasswordHasher;
use crate::auth::policy::PasswordPolicy;
use crate::auth::rate_limit::RateLimits;
use crate::auth::rbac::Rbac;
use crate::auth::revocation::RevocationSet;
use crate::auth::sessions::{SessionParts, Sessions};
use crate::auth::tokens::AccessTokens;
use crate::auth::validation_cache::ValidationCache;
use crate::cache::bus::Bus;
use crate::config::Config;
use crate::store::SessionStore;
use crate::store::deferred::{DeferredLog, MAX_DEFERRED, MemoryDeferredLog};
use crate::store::layered::LayeredSessionStore;
use crate::store::redis_deferred::RedisDeferredLog;
use std::sync::Arc;

/// Every domain service; `AppState` holds them for the handlers.
pub(super) struct Domain {
    pub accounts: Arc<Accounts>,
    pub sessions: Arc<Sessions>,
    pub tokens: Arc<AccessTokens>,
    pub keys: Arc<KeyRing>,
    pub key_rotation: Arc<KeyRotation>,
    pub revocations: Arc<RevocationSet>,
    pub limits: Arc<RateLimits>,
    pub api_keys: Arc<ApiKeys>,
    pub rbac: Arc<Rbac>,
    pub audit: Arc<Audit>,
    pub bus: Arc<Bus>,
    pub validation: Arc<ValidationCache>,
}

impl Domain {
    pub fn build(config: &Config, stores: &Stores, master: MasterKey) -> Result<Self, StartError> {
        let durable = &stores.durable;
        let bus = bus(stores, outbox_deadline(config));
        let audit = Audit::new(
            Arc::clone(&durable.audit),
            spill(stores, AUDIT_SPILL),
            outbox_deadline(config),
        );
        let sessions: Arc<dyn SessionStore> = LayeredSessionStore::start(
            Arc::clone(&stores.shared.cache),
            Arc::clone(&durable.ledger),
            Arc::clone(&stores.shared.deferred),
        );
        let limits = Arc::new(RateLimits::new(
            Arc::clone(&stores.shared.limiter),
            config.rate_limit.clone(),
        ));
        let (keys, tokens, revocations, validation) =
            token_services(config, Arc::clone(&durable.keys), master)?;
        let hasher = PasswordHasher::start_upgrading(
            config.passwords.hash_workers,
            config.passwords.queue,
            Some(Arc::clone(&durable.users)),
        )
        .map_err(|e| StartError::Other(e.to_string()))?;
        let accounts = Arc::new(Accounts::new(
            Arc::clone(&durable.users),
            Arc::clone(&sessions),
            Arc::clone(&hasher),
            Arc::new(PasswordPolicy::load()),
            Arc::clone(&bus),
            Arc::clone(&audit),
            Arc::clone(&limits),
        ));
        let session_service = Arc::new(Sessions::new(SessionParts {
            users: Arc::clone(&durable.users),
            sessions,
            hasher,
            tokens: Arc::clone(&tokens),
            bus: Arc::clone(&bus),
            audit: Arc::clone(&audit),
            limits: Arc::clone(&limits),
            refresh_ttl: config.tokens.refresh_ttl.as_secs() as i64,
        }));
        let rbac = Rbac::new(
            Arc::clone(&durable.roles),
            config.cache.authz_ttl,
            config.cache.authz_max_stale,
            Arc::clone(&bus),
            Arc::clone(&audit),
        );
        let api_keys = ApiKeys::new(
            Arc::clone(&durable.api_keys),
            Arc::clone(&rbac),
            config.cache.api_key_ttl,
            Arc::clone(&bus),
            Arc::clone(&audit),
            Arc::clone(&limits),
        );
        let key_rotation = Arc::new(KeyRotation::new(
            Arc::clone(&keys),
            Arc::clone(&bus),
            Arc::clone(&audit),
        ));
        let domain = Self {
            accounts,
            sessions: session_service,
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
        };
        domain.listen();
        domain.audit.spawn_purge(config.audit.retention);
        Ok(domain)
    }

    /// What must hear of other nodes' changes (and this node's own).
    fn listen(&self) {
        self.bus.subscribe(self.revocations.clone());
        self.bus.subscribe(self.validation.clone());
        self.bus.subscribe(self.api_keys.clone());
        self.bus.subscribe(self.rbac.clone());
        self.bus
            .subscribe(Arc::new(ReloadOnChange(Arc::clone(&self.keys))));
    }
}

/// How long a request waits for the outbox writer before it puts its
/// audit event or invalidation row in the spill log itself: the
/// database's timeout (`resilience::outbox`).
fn outbox_deadline(config: &Config) -> std::time::Duration {
    config.database.timeout
}

/// The streams where the outboxes hold what the database could not take.
const AUDIT_SPILL: &str = "hf:outbox:audit";
const INVALIDATION_SPILL: &str = "hf:outbox:invalidations";

/// An outbox's spill log: a Redis stream wherever Redis is the shared
/// state (so nothing acknowledged waits in one process), process memory
/// in the embedded mode.
fn spill<T>(stores: &Stores, stream: &'static str) -> Arc<dyn DeferredLog<T>>
where
    T: Clone + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    match &stores.shared.redis {
        Some(link) => Arc::new(RedisDeferredLog::on_stream(
            stream,
            link.clone(),
            Arc::clone(&stores.redis_guard),
        )),
        None => Arc::new(MemoryDeferredLog::new(MAX_DEFERRED)),
    }
}

/// The invalidation bus: its log in the database, pub/sub on Redis when
/// Redis is there.
fn bus(stores: &Stores, deadline: std::time::Duration) -> Arc<Bus> {
    Bus::new(
        Some((
            Arc::clone(&stores.durable.invalidations),
            spill(stores, INVALIDATION_SPILL),
            deadline,
        )),
        stores
            .shared
            .redis
            .as_ref()
            .map(|link| (link.clone(), Arc::clone(&stores.redis_guard))),
    )
}

type TokenParts = (
    Arc<KeyRing>,
    Arc<AccessTokens>,
    Arc<RevocationSet>,
    Arc<ValidationCache>,
);

/// The key ring, still empty (`startup` loads it), and what issues and
/// checks tokens with it.
fn token_services(
    config: &Config,
    store: Arc<dyn crate::store::KeyStore>,
    master: MasterKey,
) -> Result<TokenParts, StartError> {
    let access_ttl = config.tokens.access_ttl.as_secs() as i64;
    let leeway = config.tokens.leeway.as_secs() as i64;
    let schedule = KeySchedule {
        verify_after_superseded: access_ttl + leeway,
        standby: config.tokens.jwks_max_age.as_secs() as i64,
    };
    let kind = KeyKind::parse(&config.tokens.algorithm)
        .ok_or_else(|| StartError::Other("tokens.algorithm: unsupported".into()))?;
    let keys = KeyRing::empty(store, master, schedule, kind);
    let revocations = Arc::new(RevocationSet::with_roles_horizon(
        access_ttl + leeway,
        config.tokens.refresh_ttl.as_secs() as i64,
    ));
    let validation = Arc::new(ValidationCache::new(config.cache.validation_ttl));
    let tokens = Arc::new(AccessTokens::new(
        Arc::clone(&keys),
        Arc::clone(&revocations),
        Arc::clone(&validation),
        config.issuer.clone(),
        config.audience.clone(),
        access_ttl,
        leeway,
    ));
    Ok((keys, tokens, revocations, validation))
}

/// Break-glass verification, when `[emergency]` is configured and on.
pub(super) fn emergency(config: &Config) -> Result<Option<Arc<EmergencyVerifier>>, StartError> {
    match (&config.emergency.public_key_file, config.emergency.enabled) {
        (Some(path), true) => Ok(Some(Arc::new(
            EmergencyVerifier::load(
                path,
                config.issuer.clone(),
                config.audience.clone(),
                config.tokens.leeway.as_secs() as i64,
                &config.emergency.deny_jti,
            )
            .map_err(StartError::Other)?,
        ))),
        _ => Ok(None),
    }
}
