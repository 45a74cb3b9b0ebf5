//! The validation cache: tokens this node verified, keyed by the SHA-256 of
//! the token (the token itself is never kept), so a repeat skips the
//! signature check. Each entry expires no later than its token. A hit is
//! still checked against what can change after verification — the key
//! still verifies, the token has not expired, no revocation covers it — so
//! the cache can make verification faster but never more permissive.
//!
//! Two levels. The shared one is a bounded `moka` cache. In front of it each
//! worker thread keeps its own copies of the entries it used last (`Near`):
//! a hit in the shared cache writes shared memory (moka's read log, the
//! entry's access time and reference count, the hit counter), so two cores
//! verifying the same tokens passed those cache lines back and forth on
//! every request. Any invalidation clears every thread's copies (a
//! generation number), and a hit at either level is re-checked the same
//! way by the caller.
//!
//! Both levels judge expiry by the `now` they are given: an entry is kept
//! with the moment it stops serving (`until`: the token's `exp`, or the
//! TTL, whichever comes first). moka's own timer only reclaims memory.

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

impl Slot {
    /// Copies an entry to this thread's front until `until`, tagged with
    /// the generation read before the shared cache was: if an invalidation
    /// ran since, it is not kept.
    fn keep(&self, key: [u8; 32], verified: &Verified, generation: u64, until: UnixTime) {
        let mut near = self.near.lock();
        if near.generation != generation {
            return;
        }
        if near.entries.len() >= NEAR_CAPACITY {
            near.entries.clear();
        }
        near.entries.insert(key, (verified.private_copy(), until));
    }
}

#[derive(Default)]
struct Near {
    /// The generation these entries were read under.
    generation: u64,
    /// Keys are SHA-256 digests of tokens that verified: not chosen by
    /// clients, so a fast hash is safe.
    entries: HashMap<[u8; 32], (Verified, UnixTime), foldhash::fast::RandomState>,
}

pub struct ValidationCache {
    /// Each entry with the moment it stops serving.
    entries: CountedCache<[u8; 32], (Verified, UnixTime)>,
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

    pub fn get(&self, key: &[u8; 32], now: UnixTime) -> Option<Verified> {
        let generation = self.generation.load(Ordering::Acquire);
        let slot = self.near.get_or_default();
        {
            let mut near = slot.near.lock();
            if near.generation != generation {
                near.entries.clear();
                near.generation = generation;
            }
            match near.entries.get(key) {
                Some((verified, until)) if now < *until => {
                    slot.hits.fetch_add(1, Ordering::Relaxed);
                    return Some(verified.clone());
                }
                Some(_) => {
                    near.entries.remove(key);
                }
                None => {}
            }
        }
        let (verified, until) = self.entries.get_fresh(key, |(_, until)| now < *until)?;
        slot.keep(*key, &verified, generation, until);
        Some(verified)
    }

    /// Caches a successful verification until the token's `exp` at the
    /// latest.
    pub fn insert(&self, key: [u8; 32], verified: Verified, now: UnixTime) {
        let generation = self.generation.load(Ordering::Acquire);
        let left = self.left(&verified, now);
        if left.is_zero() {
            return;
        }
        let until = now + left.as_secs() as UnixTime;
        self.near
            .get_or_default()
            .keep(key, &verified, generation, until);
        self.entries.insert(key, (verified, until), left);
    }

    fn left(&self, verified: &Verified, now: UnixTime) -> Duration {
        let to_exp = Duration::from_secs((verified.claims.exp - now).max(0) as u64);
        to_exp.min(self.ttl)
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
            Invalidation::SessionRevoked { sid } => self
                .entries
                .invalidate_if(move |_, (v, _)| v.claims.sid == sid),
            Invalidation::UserNotBefore { user, at } | Invalidation::UserDisabled { user, at } => {
                self.entries
                    .invalidate_if(move |_, (v, _)| v.claims.sub == user && v.claims.iat < at)
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
            [1; 32],
            verified(Uuid::new_v4(), Uuid::new_v4(), now, now + 1),
            now,
        );
        cache.insert(
            [2; 32],
            verified(Uuid::new_v4(), Uuid::new_v4(), now, now),
            now,
        );
        assert!(cache.get(&[1; 32], now).is_some());
        assert!(
            cache.get(&[2; 32], now).is_none(),
            "already at exp: not cached"
        );
        let later = now + 1;
        assert!(cache.get(&[1; 32], later).is_none(), "gone with its token");
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (1, 2), "{stats:?}");
    }

    #[test]
    fn entries_never_outlive_the_ttl_on_the_clock_given() {
        let cache = ValidationCache::new(Duration::from_secs(300));
        let now = crate::auth::now();
        let token = verified(Uuid::new_v4(), Uuid::new_v4(), now, now + 3600);
        cache.insert([1; 32], token, now);
        assert!(cache.get(&[1; 32], now + 299).is_some());
        assert!(cache.get(&[1; 32], now + 300).is_none(), "the TTL ended");
        // Another thread has no copy of its own: the shared level decides.
        let cache = Arc::new(cache);
        let other = Arc::clone(&cache);
        std::thread::spawn(move || {
            assert!(other.get(&[1; 32], now + 299).is_some());
            assert!(other.get(&[1; 32], now + 300).is_none());
        })
        .join()
        .expect("the other thread's assertions");
    }

    #[test]
    fn another_threads_invalidation_reaches_this_threads_copies() {
        let cache = Arc::new(ValidationCache::new(Duration::from_secs(300)));
        let now = crate::auth::now();
        let sid = Uuid::new_v4();
        cache.insert([1; 32], verified(Uuid::new_v4(), sid, now, now + 600), now);
        // This thread now answers from its own copy, counted as a hit.
        assert!(cache.get(&[1; 32], now).is_some());
        assert!(cache.get(&[1; 32], now).is_some());
        assert_eq!(cache.stats().hits, 2, "{:?}", cache.stats());
        let other = Arc::clone(&cache);
        std::thread::spawn(move || {
            assert!(
                other.get(&[1; 32], now).is_some(),
                "read through the shared cache"
            );
            other.apply(&Invalidation::SessionRevoked { sid }, now);
        })
        .join()
        .expect("the other thread's assertions");
        assert!(cache.get(&[1; 32], now).is_none());
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (3, 1), "{stats:?}");
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
        assert!(cache.get(&[1; 32], now).is_none());
        cache.apply(
            &Invalidation::UserNotBefore {
                user: alice,
                at: now,
            },
            now,
        );
        assert!(
            cache.get(&[2; 32], now).is_none(),
            "issued before not-before"
        );
        assert!(cache.get(&[4; 32], now).is_some(), "issued after it");
        assert!(cache.get(&[3; 32], now).is_some(), "another user");
        cache.apply(&Invalidation::KeysChanged { revoked_all: true }, now);
        assert!(cache.get(&[3; 32], now).is_none());
    }
}
