//! Revocations held in memory on every node, so verification can honour them
//! with PostgreSQL and Redis both gone. Bounded by time: an entry is kept
//! only as long as a token it could refuse can still be valid
//! (`horizon` = access-token lifetime + leeway), then purged.
//!
//! Every verification reads both maps, from every core at once; writes are
//! rare (logouts, password changes). `papaya` maps are read without
//! writing shared memory, where each read of an `RwLock<HashMap>` took the
//! lock word's cache line from the other core.

use crate::cache::bus::{Invalidation, Subscriber};
use crate::store::UnixTime;
use papaya::HashMap;
use uuid::Uuid;

pub struct RevocationSet {
    horizon: i64,
    /// Revoked session id → when the entry may be forgotten.
    sessions: HashMap<Uuid, UnixTime>,
    /// User id → tokens issued before this instant are refused.
    users: HashMap<Uuid, UnixTime>,
}

impl RevocationSet {
    pub fn new(horizon_secs: i64) -> Self {
        Self {
            horizon: horizon_secs,
            sessions: HashMap::new(),
            users: HashMap::new(),
        }
    }

    pub fn horizon(&self) -> i64 {
        self.horizon
    }

    pub fn revoke_session(&self, id: Uuid, now: UnixTime) {
        self.sessions.pin().insert(id, now + self.horizon);
    }

    pub fn set_user_not_before(&self, user: Uuid, at: UnixTime) {
        self.users
            .pin()
            .update_or_insert(user, |earlier| (*earlier).max(at), at);
    }

    pub fn is_session_revoked(&self, id: Uuid) -> bool {
        self.sessions.pin().contains_key(&id)
    }

    /// Is a token of `user` issued at `iat` refused by a not-before time?
    pub fn is_user_token_revoked(&self, user: Uuid, iat: UnixTime) -> bool {
        self.users.pin().get(&user).is_some_and(|nb| iat < *nb)
    }

    /// Drops entries no live token can be affected by any more.
    pub fn purge(&self, now: UnixTime) {
        self.sessions.pin().retain(|_, forget_at| *forget_at > now);
        let horizon = self.horizon;
        self.users.pin().retain(|_, nb| *nb + horizon > now);
    }

    pub fn len(&self) -> usize {
        self.sessions.len() + self.users.len()
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
