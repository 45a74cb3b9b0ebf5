//! The validation cache: tokens this node verified, keyed by the SHA-256 of
//! the token (the token itself is never kept), so a repeat skips the
//! signature check. Each entry expires no later than its token. A hit is
//! still checked against what can change after verification — the key
//! still verifies, the token has not expired, no revocation covers it — so
//! the cache can make verification faster but never more permissive.

use crate::auth::tokens::AccessClaims;
use crate::cache::bus::{Invalidation, Subscriber};
use crate::cache::{CacheView, CountedCache};
use crate::store::UnixTime;
use std::sync::Arc;
use std::time::Duration;

/// Verified tokens kept per node.
const CAPACITY: u64 = 100_000;

#[derive(Clone)]
pub struct Verified {
    pub claims: Arc<AccessClaims>,
    pub kid: Arc<str>,
}

pub struct ValidationCache {
    entries: CountedCache<[u8; 32], Verified>,
    ttl: Duration,
}

impl ValidationCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            entries: CountedCache::new("validation", CAPACITY),
            ttl,
        }
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<Verified> {
        self.entries.get(key)
    }

    /// Caches a successful verification until the token's `exp` at the
    /// latest.
    pub fn insert(&self, key: [u8; 32], verified: Verified, now: UnixTime) {
        let left = Duration::from_secs((verified.claims.exp - now).max(0) as u64);
        self.entries.insert(key, verified, left.min(self.ttl));
    }

    pub fn view(&self) -> &dyn CacheView {
        &self.entries
    }
}

impl Subscriber for ValidationCache {
    fn apply(&self, event: &Invalidation, _: UnixTime) {
        match *event {
            Invalidation::SessionRevoked { sid } => {
                self.entries.invalidate_if(move |_, v| v.claims.sid == sid)
            }
            Invalidation::UserNotBefore { user, at } | Invalidation::UserDisabled { user, at } => {
                self.entries
                    .invalidate_if(move |_, v| v.claims.sub == user && v.claims.iat < at)
            }
            Invalidation::KeysChanged { revoked_all: true } => self.entries.invalidate_all(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn verified(sub: Uuid, sid: Uuid, iat: UnixTime, exp: UnixTime) -> Verified {
        Verified {
            claims: Arc::new(AccessClaims {
                iss: "i".into(),
                sub,
                aud: "a".into(),
                iat,
                nbf: iat,
                exp,
                jti: Uuid::new_v4(),
                sid,
                roles: vec![],
            }),
            kid: "k".into(),
        }
    }

    #[test]
    fn entries_never_outlive_their_token() {
        let cache = ValidationCache::new(Duration::from_secs(300));
        let now = crate::auth::now();
        cache.insert(
            [1; 32],
            verified(Uuid::new_v4(), Uuid::new_v4(), now, now + 1),
            now,
        );
        cache.insert(
            [2; 32],
            verified(Uuid::new_v4(), Uuid::new_v4(), now, now),
            now,
        );
        assert!(cache.get(&[1; 32]).is_some());
        assert!(cache.get(&[2; 32]).is_none(), "already at exp: not cached");
        std::thread::sleep(Duration::from_millis(1100));
        assert!(cache.get(&[1; 32]).is_none(), "gone with its token");
    }

    #[test]
    fn revocations_drop_exactly_the_entries_they_cover() {
        let cache = ValidationCache::new(Duration::from_secs(300));
        let now = crate::auth::now();
        let (alice, bob, sid) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        cache.insert([1; 32], verified(alice, sid, now, now + 600), now);
        cache.insert(
            [2; 32],
            verified(alice, Uuid::new_v4(), now - 10, now + 600),
            now,
        );
        cache.insert(
            [3; 32],
            verified(bob, Uuid::new_v4(), now - 10, now + 600),
            now,
        );
        cache.insert(
            [4; 32],
            verified(alice, Uuid::new_v4(), now + 5, now + 600),
            now,
        );
        cache.apply(&Invalidation::SessionRevoked { sid }, now);
        assert!(cache.get(&[1; 32]).is_none());
        cache.apply(
            &Invalidation::UserNotBefore {
                user: alice,
                at: now,
            },
            now,
        );
        assert!(cache.get(&[2; 32]).is_none(), "issued before not-before");
        assert!(cache.get(&[4; 32]).is_some(), "issued after it");
        assert!(cache.get(&[3; 32]).is_some(), "another user");
        cache.apply(&Invalidation::KeysChanged { revoked_all: true }, now);
        assert!(cache.get(&[3; 32]).is_none());
    }
}
