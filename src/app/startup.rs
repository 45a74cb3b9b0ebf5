//! The start-up work that needs PostgreSQL — migrations, the signing keys,
//! the revocation warm-up, the invalidation poller — and the readiness it
//! gates. A node started during an outage must not exit (a supervisor's
//! crash-loop backoff would then decide when it recovers): it serves
//! liveness, metrics, health and emergency tokens, answers every other
//! request 503 SVC001, retries in the background with capped backoff and
//! becomes ready by itself within seconds of PostgreSQL appearing
//! (DESIGN.md §5).

use crate::app::StartError;
use crate::auth::error::KeyError;
use crate::auth::keys::KeyRing;
use crate::auth::revocation::RevocationSet;
use crate::cache::bus::Bus;
use crate::resilience::DependencyGuard;
use crate::store::deferred::{Deferred, DeferredLog, MAX_DEFERRED};
use crate::store::sql::PgStore;
use crate::store::{InvalidationLog, SessionLedger, StoreError, UserStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set once keys and revocations are loaded; never cleared (later outages
/// are the breakers' business, and verification needs no store).
#[derive(Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The longest wait between two start-up attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub(crate) struct Startup {
    /// PostgreSQL to migrate (SQLite is migrated when opened: a local file).
    pub pg: Option<Arc<PgStore>>,
    pub db_guard: Arc<DependencyGuard>,
    pub keys: Arc<KeyRing>,
    pub key_refresh: Duration,
    pub revocations: Arc<RevocationSet>,
    pub ledger: Arc<dyn SessionLedger>,
    /// Writes waiting for the ledger, revocations among them.
    pub deferred: Arc<dyn DeferredLog>,
    pub users: Arc<dyn UserStore>,
    pub invalidations: Arc<dyn InvalidationLog>,
    pub bus: Arc<Bus>,
    pub poll: Duration,
    pub poll_retention: Duration,
    pub ready: Arc<Readiness>,
}

impl Startup {
    /// One attempt inline, so a healthy start is ready when `build`
    /// returns; if the database cannot be reached, the rest in the
    /// background. Anything else (a wrong master key, a bad migration)
    /// is an error for the caller.
    pub async fn run(self) -> Result<(), StartError> {
        match self.once().await {
            Ok(()) => Ok(()),
            Err(e) if transient(&e) => {
                tracing::warn!(error = %e, "database unreachable at start; serving as not ready and retrying");
                tokio::spawn(self.retry());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn retry(self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::time::sleep(backoff).await;
            match self.once().await {
                Ok(()) => {
                    tracing::info!(
                        "database reachable: migrations, keys and revocations loaded; ready"
                    );
                    return;
                }
                Err(e) if transient(&e) => {
                    tracing::debug!(error = %e, "start-up retry failed");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    // Retrying cannot fix it; stay up (not ready) and say why.
                    tracing::error!(error = %e, "start-up failed; this node stays not ready");
                    return;
                }
            }
        }
    }

    async fn once(&self) -> Result<(), StartError> {
        if let Some(pg) = &self.pg {
            pg.migrate().await?;
            // The database answered directly: failures its breaker counted
            // during the outage must not hold the next calls off.
            self.db_guard.breaker().reset();
        }
        let now = crate::auth::now();
        self.keys.initialise(now).await?;
        // The log's position is read before the revocations: a logout made
        // elsewhere after the revocations were read commits its
        // invalidation row later still, so the poller reads it. Read the
        // other way round, a row committed between the two reads was in
        // neither (found by the chaos drill: a node restarted while another
        // node logged a session out honoured that session for good).
        let start_seq = self.invalidations.last_invalidation().await?;
        self.warm_revocations(now).await?;
        self.bus.spawn_poller(
            Arc::clone(&self.invalidations),
            start_seq,
            self.poll,
            self.poll_retention,
        );
        self.keys.spawn_refresher(self.key_refresh);
        self.ready.set();
        Ok(())
    }

    /// Loads the revocations still able to refuse a live token, so a
    /// restarted node honours what was revoked before it started.
    async fn warm_revocations(&self, now: i64) -> Result<(), StoreError> {
        let revocations = &self.revocations;
        let since = now - revocations.horizon();
        self.warm_deferred_revocations().await;
        for sid in self.ledger.revoked_since(since).await? {
            revocations.revoke_session(sid, now);
        }
        for (user, not_before) in self.users.not_before_since(since).await? {
            revocations.set_user_not_before(user, not_before);
        }
        let roles_since_ms = (now - revocations.roles_horizon()).saturating_mul(1000);
        for (user, roles, at_ms) in self.users.roles_changed_since(roles_since_ms).await? {
            revocations.set_user_roles(user, &roles, at_ms);
        }
        Ok(())
    }
}

impl Startup {
    /// Logouts acknowledged while PostgreSQL was down wait in the deferred
    /// log until replayed, and a node that was not running then never heard
    /// of them on the bus. Read before the ledger: replay writes the ledger
    /// first and removes from the log after, so one of the two has each.
    /// A log that cannot be read (Redis down) does not keep the node from
    /// starting; it then knows what the ledger knows.
    async fn warm_deferred_revocations(&self) {
        match self.deferred.oldest(MAX_DEFERRED).await {
            Ok(queued) => {
                for write in queued.into_iter().filter_map(|q| q.write) {
                    if let Deferred::Revoke { id, at } = write {
                        self.revocations.revoke_session(id, at);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "deferred log unreadable at start; revocations from the database only");
            }
        }
        // The same holds for invalidation rows waiting in the bus's spill
        // log (a logout-all or a key revocation answered during the outage).
        match self.bus.apply_spilled().await {
            Ok(0) => {}
            Ok(applied) => tracing::info!(applied, "spilled invalidations applied at start"),
            Err(e) => {
                tracing::warn!(error = %e, "invalidation spill log unreadable at start; invalidations from the database only");
            }
        }
    }
}

/// The database could not be reached: worth another try.
fn transient(e: &StartError) -> bool {
    match e {
        StartError::Store(e) | StartError::Key(KeyError::Store(e)) => e.is_unavailable(),
        _ => false,
    }
}
