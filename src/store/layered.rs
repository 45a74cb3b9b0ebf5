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
//! A copy can go stale while its store was unreachable, and the newest
//! rotation wins wherever it was recorded (DESIGN.md §4):
//! * a stale cache copy (the ledger rotated while Redis was paused): the
//!   write-through is itself a compare-and-swap, so a hash the ledger knows
//!   as used is answered as `AlreadyRotated` (reuse or our own retry, which
//!   `auth::sessions` tells apart) and a session the ledger revoked is
//!   gone; a hash the cache does not know goes to the ledger, whose answer
//!   wins, and the cache catches up to the ledger's copy (the higher
//!   `Session::generation`) — the client's newest token is never refused;
//! * a stale ledger (rotations deferred, or lost with a node): it catches
//!   up from the cache, forward only.
//!
//! Deferred writes wait in a `DeferredLog` — Redis when Redis is the
//! cache, so they survive this node — and any node replays them.

use crate::store::deferred::{Deferred, DeferredLog, MAX_DEFERRED};
use crate::store::{
    Rotation, Session, SessionCache, SessionLedger, SessionStore, StoreError, Swap, UnixTime,
};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;
use uuid::Uuid;

const REPLAY_EVERY: Duration = Duration::from_millis(500);
/// Deferred writes read from the log per round trip.
const REPLAY_BATCH: usize = 100;

pub struct LayeredSessionStore {
    cache: Arc<dyn SessionCache>,
    ledger: Arc<dyn SessionLedger>,
    /// Where acknowledged deferred writes wait: Redis with Redis as the
    /// cache (any node replays them), memory in the embedded mode.
    log: Arc<dyn DeferredLog>,
    /// Writes no store could hold (the log refused or was unreachable):
    /// never acknowledged, but still replayed from this node, best effort.
    stray: Mutex<VecDeque<Deferred>>,
}

impl LayeredSessionStore {
    /// Builds the store and starts its replay task.
    pub fn start(
        cache: Arc<dyn SessionCache>,
        ledger: Arc<dyn SessionLedger>,
        log: Arc<dyn DeferredLog>,
    ) -> Arc<Self> {
        let store = Arc::new(Self {
            cache,
            ledger,
            log,
            stray: Mutex::new(VecDeque::new()),
        });
        spawn_replay(Arc::downgrade(&store));
        export_deferred(0);
        store
    }

    /// Holds `write` in the log before the caller answers. When the log
    /// cannot, the write is kept on this node (not acknowledged) and the
    /// log's refusal returned.
    async fn defer(&self, write: Deferred) -> Result<(), StoreError> {
        tracing::warn!(?write, "database unavailable: write-through deferred");
        let Err(e) = self.log.push(&write).await else {
            return Ok(());
        };
        tracing::warn!(error = %e, ?write, "deferred write not held by the log; kept on this node only");
        let mut stray = self.stray.lock();
        if stray.len() < MAX_DEFERRED {
            stray.push_back(write);
        }
        Err(e)
    }

    /// Replays deferred writes in order (the log's, then this node's
    /// strays) until none is left or the ledger fails again. One node at a
    /// time replays the log (`DeferredLog::claim_replay`): every write is
    /// idempotent and forward only, but a rotation replayed twice after the
    /// ledger moved on past it would look like a fork of the session (see
    /// `replay_rotation`). Returns how many were applied.
    pub async fn replay(&self) -> usize {
        let applied = match self.log.oldest(1).await {
            Ok(head) if head.is_empty() => 0,
            Ok(_) => match self.log.claim_replay().await {
                Ok(true) => {
                    let replayed = self.replay_log().await;
                    if let Err(e) = self.log.release_replay().await {
                        tracing::debug!(error = %e, "replay claim not released; it expires");
                    }
                    match replayed {
                        Some(applied) => applied,
                        None => return self.replayed(0).await,
                    }
                }
                // Another node is replaying the log now.
                _ => return self.replay_strays().await,
            },
            Err(e) => {
                tracing::debug!(error = %e, "deferred log unreadable; its replay waits");
                return self.replay_strays().await;
            }
        };
        // The log is empty: no need to ask it for its length.
        let applied = applied + self.replay_strays().await;
        export_deferred(self.stray.lock().len());
        if applied > 0 {
            tracing::info!(applied, "deferred session writes replayed");
        }
        applied
    }

    /// The log, oldest first, until it is empty (`Some(applied)`) or the
    /// ledger or the log fails (`None`).
    async fn replay_log(&self) -> Option<usize> {
        let mut applied = 0;
        loop {
            let batch = self.log.oldest(REPLAY_BATCH).await.ok()?;
            if batch.is_empty() {
                return Some(applied);
            }
            for queued in batch {
                // Renewed per write: a long backlog outlives one claim.
                if !self.log.claim_replay().await.ok()? {
                    return None;
                }
                if let Some(write) = &queued.write {
                    applied += usize::from(self.apply_logged(write).await?);
                } else {
                    tracing::error!(key = %queued.key, "deferred write unreadable; removed");
                }
                self.log.remove(&queued.key).await.ok()?;
            }
        }
    }

    /// Applies one write: `None` when the ledger is unavailable (stop and
    /// keep it), else whether it took effect (a refusal is logged and the
    /// write is done with).
    async fn apply_logged(&self, write: &Deferred) -> Option<bool> {
        match self.apply(write).await {
            Err(e) if e.is_unavailable() => None,
            Err(e) => {
                tracing::error!(error = %e, ?write, "deferred write dropped: the ledger refused it");
                Some(false)
            }
            Ok(()) => Some(true),
        }
    }

    async fn replay_strays(&self) -> usize {
        let mut applied = 0;
        loop {
            let Some(write) = self.stray.lock().front().cloned() else {
                return applied;
            };
            match self.apply_logged(&write).await {
                None => return applied,
                Some(done) => applied += usize::from(done),
            }
            self.stray.lock().pop_front();
        }
    }

    /// Exports the backlog left by a replay that stopped early and
    /// returns `applied`.
    async fn replayed(&self, applied: usize) -> usize {
        let strays = self.stray.lock().len();
        if let Ok(logged) = self.log.backlog().await {
            export_deferred(logged + strays);
        }
        applied
    }

    async fn apply(&self, write: &Deferred) -> Result<(), StoreError> {
        match write {
            Deferred::Rotation {
                id,
                used,
                next,
                at,
                generation,
            } => {
                let swap = Swap {
                    id: *id,
                    presented: used,
                    next,
                    at: *at,
                };
                self.replay_rotation(swap, *generation).await
            }
            Deferred::Revoke { id, at } => self.ledger.revoke(*id, *at).await,
            Deferred::Create {
                session,
                user_version,
            } => match self.ledger.create(session, *user_version).await {
                // Already there: an earlier replay got through.
                Err(StoreError::Conflict(_)) => Ok(()),
                // The user changed password, was disabled or logged out
                // everywhere first: the session must not live on in the
                // cache either.
                Err(StoreError::Superseded) => {
                    self.cache.revoke(session.id, session.created_at).await.ok();
                    Err(StoreError::Superseded)
                }
                other => other,
            },
        }
    }

    /// A deferred write-through. The ledger knowing the used hash as used
    /// already is either this very write applied before (by another node
    /// replaying the same log, or by a replay whose removal failed): the
    /// ledger then knows `next` too, current or used since; or the cache
    /// copy that decided it was stale and a used hash was presented again,
    /// forking the session: `next` is unknown to the ledger. That is reuse.
    async fn replay_rotation(&self, swap: Swap<'_>, generation: i64) -> Result<(), StoreError> {
        let Rotation::AlreadyRotated(current) = self.ledger_rotation(swap, generation).await?
        else {
            return Ok(());
        };
        let known = current.is_some_and(|s| s.refresh_hash == swap.next)
            || self.ledger.was_used(swap.id, swap.next).await?;
        if !known {
            tracing::warn!(session_id = %swap.id, "replayed rotation presented a used hash: session revoked");
            self.ledger.revoke(swap.id, swap.at).await?;
            self.cache.revoke(swap.id, swap.at).await.ok();
        }
        Ok(())
    }

    /// The write-through of a rotation the cache decided (reaching
    /// `generation` there), as a compare-and-swap in the ledger (see the
    /// module comment). Returns what the caller should answer: the
    /// ledger's word where it knows better.
    async fn ledger_rotation(
        &self,
        swap: Swap<'_>,
        generation: i64,
    ) -> Result<Rotation, StoreError> {
        match self.ledger.rotate(swap).await? {
            rotated @ Rotation::Rotated(_) => Ok(rotated),
            // The ledger missed earlier rotations (deferred, or lost with a
            // node): the cache is ahead, so the ledger catches up.
            Rotation::Mismatch => {
                self.ledger.record_rotation(swap, generation).await?;
                Ok(Rotation::Mismatch)
            }
            // The hash was used before (a stale cache copy, or the ledger
            // already has this very write): the domain tells which.
            used @ Rotation::AlreadyRotated(_) => Ok(used),
            Rotation::Gone => self.ledger_lacks(swap, generation).await,
        }
    }

    /// The ledger answered a rotation the cache made with "gone": the
    /// session is revoked (or expired) there, or it is not there (yet).
    async fn ledger_lacks(&self, swap: Swap<'_>, generation: i64) -> Result<Rotation, StoreError> {
        let Swap { id, at, .. } = swap;
        match self.ledger.get(id).await? {
            // Revoked while the cache was unreachable: the cache copy was
            // stale, and the revocation wins.
            Some(session) if !session.is_live(at) => {
                self.cache.revoke(id, at).await.ok();
                Ok(Rotation::Gone)
            }
            // Its deferred create was replayed a moment ago, behind the
            // cache: the ledger catches up.
            Some(_) => {
                self.ledger.record_rotation(swap, generation).await?;
                Ok(Rotation::Mismatch)
            }
            // Started while the ledger was down, its deferred create not
            // replayed yet (or lost): restored from the cache, which
            // holds it already rotated.
            None => {
                let Some(session) = self.cache.get(id).await? else {
                    return Ok(Rotation::Gone);
                };
                tracing::warn!(session_id = %id, "session missing from the database; restored from the cache");
                match self.ledger.create(&session, None).await {
                    // A replay of its deferred create got there first.
                    Ok(()) | Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
                self.ledger.record_rotation(swap, generation).await?;
                Ok(Rotation::Mismatch)
            }
        }
    }

    /// The cache does not know the presented hash, now or as used. The
    /// ledger may: it rotated while the cache was unreachable (a Redis
    /// pause or failover), and the cache copy is behind. The ledger's
    /// compare-and-swap decides and the cache catches up to it, so a stale
    /// copy never refuses the client's newest token (nor, the ledger
    /// knowing the hash as used, lets reuse pass).
    async fn ledger_decides(&self, swap: Swap<'_>) -> Result<Rotation, StoreError> {
        let outcome = self.ledger.rotate(swap).await?;
        let newer = match &outcome {
            Rotation::Rotated(session) => {
                tracing::warn!(session_id = %swap.id, "cached session was behind the database; repaired");
                Some(session.clone())
            }
            Rotation::AlreadyRotated(current) => current.clone(),
            Rotation::Mismatch => None,
            // Revoked or expired in the ledger: the cache catches up. Not
            // there, or live again (started while the ledger was down, its
            // create deferred or replayed just now): the cache is the one
            // that knows, and it said mismatch.
            Rotation::Gone => match self.ledger.get(swap.id).await? {
                Some(session) if !session.is_live(swap.at) => Some(session),
                _ => return Ok(Rotation::Mismatch),
            },
        };
        if let Some(session) = newer
            && let Err(e) = self.cache.catch_up(&session, &[swap.presented]).await
        {
            tracing::warn!(error = %e, session_id = %swap.id, "stale cached session not repaired");
        }
        Ok(outcome)
    }

    /// A rotation the cache made: written through, or deferred while the
    /// ledger is down.
    async fn written_through(
        &self,
        swap: Swap<'_>,
        session: Session,
    ) -> Result<Rotation, StoreError> {
        let generation = session.generation;
        Ok(match self.ledger_rotation(swap, generation).await {
            Ok(Rotation::Rotated(_) | Rotation::Mismatch) => Rotation::Rotated(session),
            Ok(stale) => stale,
            Err(e) if e.is_unavailable() => {
                let deferred = self
                    .defer(Deferred::Rotation {
                        id: swap.id,
                        used: swap.presented.to_string(),
                        next: swap.next.to_string(),
                        at: swap.at,
                        generation,
                    })
                    .await;
                // The cache already holds the rotation: refusing now would
                // leave the client with a used token (reuse at its next
                // try). It is answered, and kept on this node if the log
                // could not take it.
                if let Err(e) = deferred {
                    tracing::warn!(error = %e, session_id = %swap.id, "rotation held by the cache alone until the database returns");
                }
                Rotation::Rotated(session)
            }
            Err(e) => return Err(e),
        })
    }

    async fn revoke_everywhere(&self, id: Uuid, now: UnixTime) -> Result<(), StoreError> {
        let ledger = self.ledger.revoke(id, now).await;
        let cache = self.cache.revoke(id, now).await;
        match ledger {
            Ok(()) => Ok(()),
            // The log holds it until the ledger returns: acknowledged.
            // When the log cannot (Redis down too, DESIGN.md §4 both
            // down), the caller revokes on this node, this node replays it
            // later, and the answer is the failure — nothing is
            // acknowledged that a restart of this node would lose.
            Err(e) if e.is_unavailable() => {
                self.defer(Deferred::Revoke { id, at: now }).await?;
                if let Err(cache_error) = cache {
                    tracing::warn!(error = %cache_error, session_id = %id, "revocation not in the cached session; the deferred log holds it");
                }
                Ok(())
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
            store.replay().await;
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
            // cache holds the session and the log its create until the
            // ledger takes it. If either cannot, the login fails.
            Err(e) if e.is_unavailable() => {
                self.cache.put(session).await?;
                self.defer(Deferred::Create {
                    session: Box::new(session.clone()),
                    user_version,
                })
                .await
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
            Ok(Some(Rotation::Rotated(session))) => self.written_through(swap, session).await?,
            // Unknown to the cache, which may be the stale one.
            Ok(Some(Rotation::Mismatch)) => self.ledger_decides(swap).await?,
            Ok(Some(other)) => other,
            // Not cached, or the cache is unreachable: the ledger decides.
            Ok(None) => {
                let outcome = self.ledger.rotate(swap).await?;
                if let Rotation::Rotated(session) = &outcome {
                    self.cache.catch_up(session, &[swap.presented]).await.ok();
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
