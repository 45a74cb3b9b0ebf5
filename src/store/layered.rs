//! The session store the domain sees: a fast cache (Redis or memory) in
//! front of the SQL ledger, written through so that a session that got a 2xx
//! survives the cache losing everything (a Redis restart).
//!
//! Either layer may be down (DESIGN.md §4):
//! * cache down — reads and rotations go to the ledger;
//! * ledger down — rotations and revocations are decided by the cache and
//!   their write-through is queued (`Deferred`) and replayed when the ledger
//!   answers again.
//!
//! A cache copy can go stale while the cache was unreachable. The ledger
//! catches that, because the write-through is itself a compare-and-swap:
//! a hash the ledger knows as used is answered as `AlreadyRotated` (reuse
//! or our own retry, which `auth::sessions` tells apart), a session the
//! ledger revoked is gone, and a ledger that merely missed rotations
//! catches up.

use crate::resilience::failure::FailureKind;
use crate::store::{
    Rotation, Session, SessionCache, SessionLedger, SessionStore, StoreError, Swap, UnixTime,
};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;
use uuid::Uuid;

/// Deferred writes a node keeps while the ledger is down. Past this, new
/// degraded writes are refused (503) rather than dropped.
const MAX_DEFERRED: usize = 100_000;
const REPLAY_EVERY: Duration = Duration::from_millis(500);

/// A ledger write decided while the ledger was unreachable.
#[derive(Debug, Clone)]
enum Deferred {
    Rotation {
        id: Uuid,
        used: String,
        next: String,
        at: UnixTime,
    },
    Revoke {
        id: Uuid,
        at: UnixTime,
    },
    /// A session started while the primary was read-only or down; the
    /// cache holds it meanwhile. With the user's security version its
    /// login read, so a change answered since still refuses it.
    Create(Box<Session>, Option<i64>),
}

pub struct LayeredSessionStore {
    cache: Arc<dyn SessionCache>,
    ledger: Arc<dyn SessionLedger>,
    deferred: Mutex<VecDeque<Deferred>>,
}

impl LayeredSessionStore {
    /// Builds the store and starts its replay task.
    pub fn start(cache: Arc<dyn SessionCache>, ledger: Arc<dyn SessionLedger>) -> Arc<Self> {
        let store = Arc::new(Self {
            cache,
            ledger,
            deferred: Mutex::new(VecDeque::new()),
        });
        spawn_replay(Arc::downgrade(&store));
        export_deferred(0);
        store
    }

    /// Ledger writes waiting for the database.
    pub fn deferred_len(&self) -> usize {
        self.deferred.lock().len()
    }

    fn defer(&self, write: Deferred) -> Result<(), StoreError> {
        let mut queue = self.deferred.lock();
        if queue.len() >= MAX_DEFERRED {
            return Err(StoreError::Unavailable {
                dependency: "database",
                kind: FailureKind::QueueFull,
                reason: "deferred write queue full".into(),
            });
        }
        tracing::warn!(?write, "database unavailable: write-through deferred");
        queue.push_back(write);
        export_deferred(queue.len());
        Ok(())
    }

    /// Replays deferred writes in order until the queue is empty or the
    /// ledger fails again. Returns how many were applied.
    pub async fn replay(&self) -> usize {
        let mut applied = 0;
        loop {
            let Some(write) = self.deferred.lock().front().cloned() else {
                return applied;
            };
            let result = match &write {
                Deferred::Rotation { id, used, next, at } => {
                    self.replay_rotation(Swap {
                        id: *id,
                        presented: used,
                        next,
                        at: *at,
                    })
                    .await
                }
                Deferred::Revoke { id, at } => self.ledger.revoke(*id, *at).await,
                Deferred::Create(session, version) => {
                    match self.ledger.create(session, *version).await {
                        // Already there: an earlier replay got through.
                        Err(StoreError::Conflict(_)) => Ok(()),
                        // The user changed password, was disabled or logged
                        // out everywhere first: the session must not live on
                        // in the cache either.
                        Err(StoreError::Superseded) => {
                            self.cache.revoke(session.id, session.created_at).await.ok();
                            Err(StoreError::Superseded)
                        }
                        other => other,
                    }
                }
            };
            match result {
                Err(e) if e.is_unavailable() => return applied,
                Err(e) => {
                    tracing::error!(error = %e, ?write, "deferred write dropped: the ledger refused it")
                }
                Ok(()) => applied += 1,
            }
            let left = {
                let mut queue = self.deferred.lock();
                queue.pop_front();
                queue.len()
            };
            export_deferred(left);
            if applied > 0 && left == 0 {
                tracing::info!(applied, "deferred session writes replayed");
            }
        }
    }

    /// A deferred write-through. The ledger knowing the used hash as used
    /// already, with the session not at `next` (not an earlier replay of
    /// this very write), means the cache copy that decided it was stale.
    async fn replay_rotation(&self, swap: Swap<'_>) -> Result<(), StoreError> {
        if let Rotation::AlreadyRotated(current) = self.ledger_rotation(swap).await?
            && !current.is_some_and(|s| s.holds(swap.next, swap.at))
        {
            self.cache.revoke(swap.id, swap.at).await.ok();
        }
        Ok(())
    }

    /// The write-through of a rotation the cache decided, as a
    /// compare-and-swap in the ledger (see the module comment). Returns what
    /// the caller should answer: the ledger's word where it knows better.
    async fn ledger_rotation(&self, swap: Swap<'_>) -> Result<Rotation, StoreError> {
        let Swap { id, at, .. } = swap;
        match self.ledger.rotate(swap).await? {
            rotated @ Rotation::Rotated(_) => Ok(rotated),
            // The ledger missed earlier rotations (deferred, or lost with a
            // node): the cache is ahead, so the ledger catches up.
            Rotation::Mismatch => {
                self.ledger.record_rotation(swap).await?;
                Ok(Rotation::Mismatch)
            }
            // The ledger never got this session: it was started while the
            // ledger was down and its deferred create was lost with a node.
            // The cache holds it (already rotated); the ledger catches up.
            Rotation::Gone if self.ledger.get(id).await?.is_none() => {
                let Some(session) = self.cache.get(id).await? else {
                    return Ok(Rotation::Gone);
                };
                tracing::warn!(session_id = %id, "session missing from the database; restored from the cache");
                self.ledger.create(&session, None).await?;
                self.ledger.record_rotation(swap).await?;
                Ok(Rotation::Mismatch)
            }
            // The hash was used before (a stale cache copy, or the ledger
            // already has this very write): the domain tells which.
            used @ Rotation::AlreadyRotated(_) => Ok(used),
            // The cache copy was stale: the session was revoked while the
            // cache was unreachable.
            Rotation::Gone => {
                self.cache.revoke(id, at).await.ok();
                Ok(Rotation::Gone)
            }
        }
    }

    async fn revoke_everywhere(&self, id: Uuid, now: UnixTime) -> Result<(), StoreError> {
        let ledger = self.ledger.revoke(id, now).await;
        let cache = self.cache.revoke(id, now).await;
        match ledger {
            Ok(()) => Ok(()),
            // The cache holds it until the ledger returns: acknowledged.
            Err(e) if e.is_unavailable() => {
                self.defer(Deferred::Revoke { id, at: now })?;
                match cache {
                    Ok(()) => Ok(()),
                    // No store holds it (DESIGN.md §4, both down): the
                    // caller revokes on this node, the ledger gets it on
                    // replay, and the answer is the failure — nothing is
                    // acknowledged that a restart of this node would lose.
                    Err(cache_error) => {
                        tracing::warn!(error = %cache_error, session_id = %id, "revocation held only in this node's memory until a store returns");
                        Err(cache_error)
                    }
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// `holdfast_deferred_writes`: acknowledged writes waiting for PostgreSQL.
fn export_deferred(len: usize) {
    metrics::gauge!("holdfast_deferred_writes").set(len as f64);
}

fn spawn_replay(store: Weak<LayeredSessionStore>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REPLAY_EVERY);
        loop {
            tick.tick().await;
            let Some(store) = store.upgrade() else { return };
            if store.deferred_len() > 0 {
                store.replay().await;
            }
        }
    });
}

#[async_trait]
impl SessionStore for LayeredSessionStore {
    async fn create(&self, session: &Session, user_version: Option<i64>) -> Result<(), StoreError> {
        match self.ledger.create(session, user_version).await {
            Ok(()) => {
                // The ledger has it: a cache that cannot take it refills later.
                if let Err(e) = self.cache.put(session).await {
                    tracing::warn!(error = %e, "session not cached; the ledger serves it");
                }
                Ok(())
            }
            // Read-only (a replica answered the user lookup) or down: the
            // cache holds the session and the ledger gets it on replay. If
            // the cache cannot take it either, the login fails.
            Err(e) if e.is_unavailable() => {
                self.cache.put(session).await?;
                self.defer(Deferred::Create(Box::new(session.clone()), user_version))
            }
            Err(e) => Err(e),
        }
    }

    async fn get(&self, id: Uuid) -> Result<Option<Session>, StoreError> {
        match self.cache.get(id).await {
            Ok(Some(session)) => return Ok(Some(session)),
            Ok(None) => {}
            Err(e) if e.is_unavailable() => {
                return self.ledger.get(id).await;
            }
            Err(e) => return Err(e),
        }
        let Some(session) = self.ledger.get(id).await? else {
            return Ok(None);
        };
        self.cache.put(&session).await.ok();
        Ok(Some(session))
    }

    async fn rotate(&self, swap: Swap<'_>) -> Result<Rotation, StoreError> {
        Ok(match self.cache.rotate(swap).await {
            Ok(Some(Rotation::Rotated(session))) => match self.ledger_rotation(swap).await {
                Ok(Rotation::Rotated(_) | Rotation::Mismatch) => Rotation::Rotated(session),
                Ok(stale) => stale,
                Err(e) if e.is_unavailable() => {
                    self.defer(Deferred::Rotation {
                        id: swap.id,
                        used: swap.presented.to_string(),
                        next: swap.next.to_string(),
                        at: swap.at,
                    })?;
                    Rotation::Rotated(session)
                }
                Err(e) => return Err(e),
            },
            // The cache may have been refilled after the hash was used.
            Ok(Some(Rotation::Mismatch)) => {
                match self.ledger.was_used(swap.id, swap.presented).await {
                    Ok(true) => Rotation::AlreadyRotated(None),
                    Ok(false) => Rotation::Mismatch,
                    Err(e) if e.is_unavailable() => Rotation::Mismatch,
                    Err(e) => return Err(e),
                }
            }
            Ok(Some(other)) => other,
            // Not cached, or the cache is unreachable: the ledger decides.
            Ok(None) => {
                let outcome = self.ledger.rotate(swap).await?;
                if let Rotation::Rotated(session) = &outcome {
                    self.cache.put(session).await.ok();
                }
                outcome
            }
            Err(e) if e.is_unavailable() => self.ledger.rotate(swap).await?,
            Err(e) => return Err(e),
        })
    }

    async fn revoke(&self, id: Uuid, now: UnixTime) -> Result<(), StoreError> {
        self.revoke_everywhere(id, now).await
    }

    async fn revoke_user(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        now: UnixTime,
    ) -> Result<Vec<Uuid>, StoreError> {
        let revoked = self.ledger.revoke_user(user_id, keep, now).await?;
        for id in &revoked {
            // A stale live copy left by a failure here is caught by the
            // ledger's compare-and-swap at its next refresh.
            if let Err(e) = self.cache.revoke(*id, now).await {
                tracing::warn!(error = %e, session_id = %id, "cache not told of a revocation");
            }
        }
        Ok(revoked)
    }

    async fn list_for_user(
        &self,
        user_id: Uuid,
        now: UnixTime,
    ) -> Result<Vec<Session>, StoreError> {
        // The cache has no complete per-user index after a restart; the
        // ledger does.
        self.ledger.list_for_user(user_id, now).await
    }
}
