//! The session store the domain sees: a fast cache (Redis or memory) in
//! front of the SQL ledger, written through so that a session that got a 2xx
//! survives the cache losing everything (a Redis restart).
//!
//! Reads go to the cache first and refill it from the ledger on a miss.
//! Rotation is decided atomically by whichever layer holds the session: the
//! cache when it has it (then recorded in the ledger), the ledger otherwise.

use crate::store::{
    Rotation, Session, SessionCache, SessionLedger, SessionStore, StoreError, UnixTime,
};
use async_trait::async_trait;
use std::sync::Arc;
use uuid::Uuid;

pub struct LayeredSessionStore {
    cache: Arc<dyn SessionCache>,
    ledger: Arc<dyn SessionLedger>,
}

impl LayeredSessionStore {
    pub fn new(cache: Arc<dyn SessionCache>, ledger: Arc<dyn SessionLedger>) -> Self {
        Self { cache, ledger }
    }

    pub fn cache_backend(&self) -> &'static str {
        self.cache.backend()
    }

    async fn revoke_everywhere(&self, id: Uuid, now: UnixTime) -> Result<(), StoreError> {
        self.ledger.revoke(id, now).await?;
        self.cache.revoke(id, now).await
    }
}

#[async_trait]
impl SessionStore for LayeredSessionStore {
    async fn create(&self, session: &Session) -> Result<(), StoreError> {
        self.ledger.create(session).await?;
        self.cache.put(session).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Session>, StoreError> {
        if let Some(session) = self.cache.get(id).await? {
            return Ok(Some(session));
        }
        let Some(session) = self.ledger.get(id).await? else {
            return Ok(None);
        };
        self.cache.put(&session).await?;
        Ok(Some(session))
    }

    async fn rotate(
        &self,
        id: Uuid,
        presented: &str,
        next: &str,
        now: UnixTime,
    ) -> Result<Rotation, StoreError> {
        let outcome = match self.cache.rotate(id, presented, next, now).await? {
            Some(Rotation::Rotated(session)) => {
                self.ledger
                    .record_rotation(id, presented, next, now)
                    .await?;
                Rotation::Rotated(session)
            }
            // The cache may have been refilled after the hash was used.
            Some(Rotation::Mismatch) if self.ledger.was_used(id, presented).await? => {
                Rotation::Reused
            }
            Some(other) => other,
            None => {
                let outcome = self.ledger.rotate(id, presented, next, now).await?;
                if let Rotation::Rotated(session) = &outcome {
                    self.cache.put(session).await?;
                }
                outcome
            }
        };
        if matches!(outcome, Rotation::Reused) {
            self.revoke_everywhere(id, now).await?;
        }
        Ok(outcome)
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
            self.cache.revoke(*id, now).await?;
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
