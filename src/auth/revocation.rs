//! Revocations held in memory on every node, so verification can honour them
//! with PostgreSQL and Redis both gone. Bounded by time: an entry is kept
//! only as long as a token it could refuse can still be valid
//! (`horizon` = access-token lifetime + leeway), then purged.

use crate::cache::bus::{Invalidation, Subscriber};
use crate::store::UnixTime;
use parking_lot::RwLock;
use std::collections::HashMap;
use uuid::Uuid;

pub struct RevocationSet {
    horizon: i64,
    /// Revoked session id → when the entry may be forgotten.
    sessions: RwLock<HashMap<Uuid, UnixTime>>,
    /// User id → tokens issued before this instant are refused.
    users: RwLock<HashMap<Uuid, UnixTime>>,
}

impl RevocationSet {
    pub fn new(horizon_secs: i64) -> Self {
        Self {
            horizon: horizon_secs,
            sessions: RwLock::new(HashMap::new()),
            users: RwLock::new(HashMap::new()),
        }
    }

    pub fn horizon(&self) -> i64 {
        self.horizon
    }

    pub fn revoke_session(&self, id: Uuid, now: UnixTime) {
        self.sessions.write().insert(id, now + self.horizon);
    }

    pub fn set_user_not_before(&self, user: Uuid, at: UnixTime) {
        let mut users = self.users.write();
        let entry = users.entry(user).or_insert(at);
        *entry = (*entry).max(at);
    }

    pub fn is_session_revoked(&self, id: Uuid) -> bool {
        self.sessions.read().contains_key(&id)
    }

    /// Is a token of `user` issued at `iat` refused by a not-before time?
    pub fn is_user_token_revoked(&self, user: Uuid, iat: UnixTime) -> bool {
        self.users.read().get(&user).is_some_and(|nb| iat < *nb)
    }

    /// Drops entries no live token can be affected by any more.
    pub fn purge(&self, now: UnixTime) {
        self.sessions
            .write()
            .retain(|_, forget_at| *forget_at > now);
        let horizon = self.horizon;
        self.users.write().retain(|_, nb| *nb + horizon > now);
    }

    pub fn len(&self) -> usize {
        self.sessions.read().len() + self.users.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Subscriber for RevocationSet {
    fn apply(&self, event: &Invalidation, now: UnixTime) {
        match *event {
            Invalidation::SessionRevoked { sid } => self.revoke_session(sid, now),
            Invalidation::UserNotBefore { user, at } | Invalidation::UserDisabled { user, at } => {
                self.set_user_not_before(user, at)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_exactly_as_long_as_a_token_could() {
        let set = RevocationSet::new(100);
        let (sid, user) = (Uuid::new_v4(), Uuid::new_v4());
        set.revoke_session(sid, 1_000);
        set.set_user_not_before(user, 1_000);
        assert!(set.is_session_revoked(sid));
        assert!(set.is_user_token_revoked(user, 999));
        assert!(!set.is_user_token_revoked(user, 1_000));
        set.purge(1_099);
        assert!(set.is_session_revoked(sid));
        set.purge(1_100);
        assert!(set.is_empty());
    }
}
