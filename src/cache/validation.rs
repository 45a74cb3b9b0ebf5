//! The validation cache: tokens this node verified, so a repeat skips the
//! signature check. Each entry expires no later than its token. A hit is
//! still checked against what can change after verification — the key
//! still verifies, the token has not expired, no revocation covers it — so
//! the cache can make verification faster but never more permissive.
//!
//! Two levels. The shared one is a bounded `moka` cache keyed by the
//! SHA-256 of the token (up to 100,000 entries, and no token kept). In
//! front of it each worker thread keeps the last tokens it verified
//! (`Near`, at most 1,024): a hit in the shared cache writes shared memory
//! (moka's read log, the entry's access time and reference count, the hit
//! counter), so two cores verifying the same tokens passed those cache lines
//! back and forth on every request, and hashing a 500-byte token was the
//! largest single cost left on the path. The thread's level is keyed by
//! the token's last eight bytes (signature bytes: not chosen by a client
//! who does not hold the signing key) and a hit compares the whole token.
//! Any invalidation clears every thread's level (a generation number).

use crate::auth::sha256;
use crate::auth::tokens::AccessClaims;
use crate::cache::bus::{Invalidation, Subscriber};
use crate::cache::{CacheStats, CacheView, CountedCache};
use crate::store::UnixTime;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use thread_local::ThreadLocal;

/// Verified tokens kept per node.
const CAPACITY: u64 = 100_000;
/// Entries each worker thread keeps in front of the shared cache; emptied
/// when full (the shared cache still has them).
const NEAR_CAPACITY: usize = 1024;

#[derive(Clone)]
pub struct Verified {
    pub claims: Arc<AccessClaims>,
    pub kid: Arc<str>,
}

impl Verified {
    /// A copy sharing no reference count with `self`, for one thread.
    fn private_copy(&self) -> Self {
        Verified {
            claims: Arc::new((*self.claims).clone()),
            kid: Arc::from(&*self.kid),
        }
    }
}

/// One thread's front of the cache. The lock is only ever taken by its own
/// thread (uncontended); it makes the slot `Sync` so the stats can read
/// the hit count.
#[derive(Default)]
struct Slot {
    hits: AtomicU64,
    near: Mutex<Near>,
}

#[derive(Default)]
struct Near {
    /// The generation these entries were read under.
    generation: u64,
    /// By `near_key`; a slot holds one token, compared whole on a hit.
    entries: HashMap<u64, NearEntry, foldhash::fast::RandomState>,
}

struct NearEntry {
    token: Box<str>,
    verified: Verified,
    until: UnixTime,
}

/// The slot of a token in a thread's level: its last eight bytes, which
/// are signature. Two tokens sharing them only share a slot (each lookup
/// compares the whole token), and only verified tokens are ever put in.
fn near_key(token: &str) -> u64 {
    let bytes = token.as_bytes();
    let mut tail = [0u8; 8];
    let n = bytes.len().min(8);
    tail[..n].copy_from_slice(&bytes[bytes.len() - n..]);
    u64::from_le_bytes(tail)
}

pub struct ValidationCache {
    entries: CountedCache<[u8; 32], Verified>,
    ttl: Duration,
    near: ThreadLocal<Slot>,
    /// Bumped after every invalidation: threads' copies of an older
    /// generation are dropped before use.
    generation: AtomicU64,
}

impl ValidationCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            entries: CountedCache::new("validation", CAPACITY),
            ttl,
            near: ThreadLocal::new(),
            generation: AtomicU64::new(0),
        }
    }

    pub fn get(&self, token: &str, now: UnixTime) -> Option<Verified> {
        let generation = self.generation.load(Ordering::Acquire);
        let slot = self.near.get_or_default();
        let near_key = near_key(token);
        {
            let mut near = slot.near.lock();
            if near.generation != generation {
                near.entries.clear();
                near.generation = generation;
            }
            if let Some(entry) = near.entries.get(&near_key)
                && *entry.token == *token
            {
                if now < entry.until {
                    slot.hits.fetch_add(1, Ordering::Relaxed);
                    return Some(entry.verified.clone());
                }
                near.entries.remove(&near_key);
            }
        }
        let verified = self.entries.get(&sha256(token))?;
        self.keep_near(slot, token, &verified, generation, now);
        Some(verified)
    }

    /// Caches a successful verification until the token's `exp` at the
    /// latest.
    pub fn insert(&self, token: &str, verified: Verified, now: UnixTime) {
        let generation = self.generation.load(Ordering::Acquire);
        let left = self.left(&verified, now);
        if left.is_zero() {
            return;
        }
        self.keep_near(
            self.near.get_or_default(),
            token,
            &verified,
            generation,
            now,
        );
        self.entries.insert(sha256(token), verified, left);
    }

    fn left(&self, verified: &Verified, now: UnixTime) -> Duration {
        let to_exp = Duration::from_secs((verified.claims.exp - now).max(0) as u64);
        to_exp.min(self.ttl)
    }

    /// Keeps an entry in this thread's level, tagged with the generation
    /// read before the shared cache was: if an invalidation ran since, it
    /// is not kept.
    fn keep_near(
        &self,
        slot: &Slot,
        token: &str,
        verified: &Verified,
        generation: u64,
        now: UnixTime,
    ) {
        let until = now + self.left(verified, now).as_secs() as UnixTime;
        let mut near = slot.near.lock();
        if near.generation != generation {
            return;
        }
        if near.entries.len() >= NEAR_CAPACITY {
            near.entries.clear();
        }
        let entry = NearEntry {
            token: token.into(),
            verified: verified.private_copy(),
            until,
        };
        near.entries.insert(near_key(token), entry);
    }

    /// Drops every thread's copies (after the shared cache was changed).
    fn next_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn view(&self) -> &dyn CacheView {
        self
    }
}

impl CacheView for ValidationCache {
    fn name(&self) -> &'static str {
        self.entries.name()
    }

    /// The shared cache's figures, with the hits answered by the threads'
    /// copies added (those never reached the shared cache).
    fn stats(&self) -> CacheStats {
        let mut stats = self.entries.stats();
        stats.hits += self
            .near
            .iter()
            .map(|slot| slot.hits.load(Ordering::Relaxed))
            .sum::<u64>();
        let lookups = stats.hits + stats.misses;
        stats.hit_rate = super::hit_rate(stats.hits, lookups);
        stats
    }

    fn cleanup(&self) {
        self.entries.cleanup();
        self.next_generation();
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
            _ => return,
        }
        self.next_generation();
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
            "t1",
            verified(Uuid::new_v4(), Uuid::new_v4(), now, now + 1),
            now,
        );
        cache.insert(
            "t2",
            verified(Uuid::new_v4(), Uuid::new_v4(), now, now),
            now,
        );
        assert!(cache.get("t1", now).is_some());
        assert!(cache.get("t2", now).is_none(), "already at exp: not cached");
        std::thread::sleep(Duration::from_millis(1100));
        let later = crate::auth::now();
        assert!(cache.get("t1", later).is_none(), "gone with its token");
    }

    #[test]
    fn another_threads_invalidation_reaches_this_threads_copies() {
        let cache = Arc::new(ValidationCache::new(Duration::from_secs(300)));
        let now = crate::auth::now();
        let sid = Uuid::new_v4();
        cache.insert("t1", verified(Uuid::new_v4(), sid, now, now + 600), now);
        // This thread now answers from its own copy, counted as a hit.
        assert!(cache.get("t1", now).is_some());
        assert!(cache.get("t1", now).is_some());
        assert_eq!(cache.stats().hits, 2, "{:?}", cache.stats());
        let other = Arc::clone(&cache);
        std::thread::spawn(move || {
            assert!(
                other.get("t1", now).is_some(),
                "read through the shared cache"
            );
            other.apply(&Invalidation::SessionRevoked { sid }, now);
        })
        .join()
        .expect("the other thread's assertions");
        assert!(cache.get("t1", now).is_none());
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (3, 1), "{stats:?}");
    }

    #[test]
    fn tokens_sharing_a_slot_are_told_apart_by_the_whole_token() {
        let cache = ValidationCache::new(Duration::from_secs(300));
        let now = crate::auth::now();
        let alice = Uuid::new_v4();
        cache.insert(
            "header.alice.SAMETAIL",
            verified(alice, Uuid::new_v4(), now, now + 600),
            now,
        );
        assert_eq!(
            near_key("header.alice.SAMETAIL"),
            near_key("forged.other.SAMETAIL")
        );
        assert!(cache.get("forged.other.SAMETAIL", now).is_none());
        let hit = cache
            .get("header.alice.SAMETAIL", now)
            .expect("alice's token");
        assert_eq!(hit.claims.sub, alice);
    }

    #[test]
    fn revocations_drop_exactly_the_entries_they_cover() {
        let cache = ValidationCache::new(Duration::from_secs(300));
        let now = crate::auth::now();
        let (alice, bob, sid) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        cache.insert("t1", verified(alice, sid, now, now + 600), now);
        cache.insert(
            "t2",
            verified(alice, Uuid::new_v4(), now - 10, now + 600),
            now,
        );
        cache.insert(
            "t3",
            verified(bob, Uuid::new_v4(), now - 10, now + 600),
            now,
        );
        cache.insert(
            "t4",
            verified(alice, Uuid::new_v4(), now + 5, now + 600),
            now,
        );
        cache.apply(&Invalidation::SessionRevoked { sid }, now);
        assert!(cache.get("t1", now).is_none());
        cache.apply(
            &Invalidation::UserNotBefore {
                user: alice,
                at: now,
            },
            now,
        );
        assert!(cache.get("t2", now).is_none(), "issued before not-before");
        assert!(cache.get("t4", now).is_some(), "issued after it");
        assert!(cache.get("t3", now).is_some(), "another user");
        cache.apply(&Invalidation::KeysChanged { revoked_all: true }, now);
        assert!(cache.get("t3", now).is_none());
    }
}
