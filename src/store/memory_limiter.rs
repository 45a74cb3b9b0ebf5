//! The in-process rate limiter: development without Redis, the per-node
//! fallback of `rate_limit.on_backend_failure = "local"`, and the per-node
//! limit on failed API-key lookups. Written here (not governor) so it has
//! exactly the semantics of the Redis scripts — sliding-window log,
//! reservations, refunds, pair locks, the account ceiling and its known
//! addresses — and a refund means the same thing on both.
//!
//! Anyone on the network chooses the keys it is asked about, so it is
//! bounded (DESIGN.md §5): in entries and in bytes, split over shards so no
//! call waits on one lock for everything. Each shard drops what has aged
//! out on a periodic sweep of that shard alone, and again (at most once a
//! second) when it is full. A live entry is never evicted — evicting a
//! failure count or a lock would hand an attacker fresh guesses — so at the
//! bound a new key is refused with `StoreError::Unavailable` (503).

use crate::store::{AccountWindows, LimitDecision, LimiterStore, LoginSubject, StoreError, Window};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::time::Duration;

/// Keys held at most, all shards together.
const MAX_ENTRIES: usize = 100_000;
/// Bytes held at most (approximately), all shards together.
const MAX_BYTES: usize = 32 << 20;
const SHARDS: usize = 16;
/// How often a shard drops its aged-out entries when it is not full.
const SWEEP_EVERY_MS: i64 = 10_000;
/// How often a full shard may sweep to make room: a caller at the bound
/// must not make every call scan the shard.
const SWEEP_WHEN_FULL_MS: i64 = 1_000;
/// Bookkeeping of one key beyond its own bytes: the map slot, the entry,
/// the key's `String`.
const ENTRY_COST: usize = 160;
/// One reservation: its time, its member's `String`, the queue slot.
const HIT_COST: usize = 48;
/// Addresses remembered per account; the oldest goes first.
const KNOWN_PER_ACCOUNT: usize = 256;

#[derive(Default)]
struct Entry {
    /// (time in ms, member) of each reservation inside the window.
    hits: VecDeque<(i64, String)>,
    locked_until: i64,
    strikes: u32,
    strikes_until: i64,
    /// Addresses that logged into the account, and when (ms).
    known: Vec<(String, i64)>,
    /// After this instant nothing in the entry matters: a sweep drops it.
    idle_at: i64,
    /// Heap bytes held beyond `ENTRY_COST` and the key.
    bytes: usize,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn after(from: i64, ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms - from).unwrap_or(0))
}

impl Entry {
    fn slide(&mut self, period: Duration, now: i64) {
        let start = now - ms(period);
        while let Some((t, member)) = self.hits.front() {
            if *t > start {
                break;
            }
            self.bytes -= HIT_COST + member.len();
            self.hits.pop_front();
        }
    }

    /// Why a reservation is refused now, if it is.
    fn refusal(&mut self, window: Window, now: i64) -> Option<LimitDecision> {
        if self.locked_until > now {
            return Some(LimitDecision {
                allowed: false,
                limit: window.limit,
                remaining: 0,
                reset_after: after(now, self.locked_until),
            });
        }
        self.slide(window.period, now);
        if (self.hits.len() as u64) < u64::from(window.limit) {
            return None;
        }
        let oldest = self.hits.front().map_or(now, |(t, _)| *t);
        Some(LimitDecision {
            allowed: false,
            limit: window.limit,
            remaining: 0,
            reset_after: after(now, oldest + ms(window.period)),
        })
    }

    /// Takes a slot; the caller has checked `refusal`.
    fn take(&mut self, window: Window, member: &str, now: i64) -> LimitDecision {
        self.bytes += HIT_COST + member.len();
        self.hits.push_back((now, member.to_string()));
        self.idle_at = self.idle_at.max(now + ms(window.period));
        LimitDecision {
            allowed: true,
            limit: window.limit,
            remaining: window.limit.saturating_sub(self.hits.len() as u32),
            reset_after: window.period,
        }
    }

    fn give_back(&mut self, member: &str) {
        if let Some(at) = self.hits.iter().position(|(_, m)| m == member) {
            self.bytes -= HIT_COST + member.len();
            self.hits.remove(at);
        }
    }

    /// A confirmed failure: locks when the window is full.
    fn fail(&mut self, window: Window, max: Duration, now: i64) -> Option<Duration> {
        self.slide(window.period, now);
        if (self.hits.len() as u64) < u64::from(window.limit) {
            return None;
        }
        if self.strikes_until <= now {
            self.strikes = 0;
        }
        self.strikes = self.strikes.saturating_add(1);
        let lock = window
            .period
            .saturating_mul(1 << (self.strikes - 1).min(20))
            .min(max);
        self.locked_until = now + ms(lock);
        // A strike is remembered for `max` after its lock ends, so a
        // second round of guesses locks longer — never past `max`.
        self.strikes_until = self.locked_until + ms(max);
        self.idle_at = self.idle_at.max(self.strikes_until);
        for (_, member) in self.hits.drain(..) {
            self.bytes -= HIT_COST + member.len();
        }
        Some(lock)
    }

    fn knows(&self, address: &str, since: i64) -> bool {
        self.known.iter().any(|(a, t)| a == address && *t > since)
    }

    fn remember(&mut self, address: &str, known_for: Duration, now: i64) {
        let since = now - ms(known_for);
        let mut freed = 0;
        self.known.retain(|(a, t)| {
            let keep = *t > since && a != address;
            if !keep {
                freed += HIT_COST + a.len();
            }
            keep
        });
        if self.known.len() >= KNOWN_PER_ACCOUNT
            && let Some(oldest) = (0..self.known.len()).min_by_key(|&i| self.known[i].1)
        {
            freed += HIT_COST + self.known.swap_remove(oldest).0.len();
        }
        self.bytes -= freed;
        self.bytes += HIT_COST + address.len();
        self.known.push((address.to_string(), now));
        self.idle_at = self.idle_at.max(now + ms(known_for));
    }
}

/// A share of the keys, with its own lock and its share of the bounds.
struct Shard {
    map: HashMap<String, Entry>,
    bytes: usize,
    next_sweep: i64,
    last_full_sweep: i64,
}

impl Shard {
    fn cost(key: &str, entry: &Entry) -> usize {
        ENTRY_COST + key.len() + entry.bytes
    }

    fn sweep(&mut self, now: i64) {
        let mut freed = 0;
        self.map.retain(|key, entry| {
            let keep = entry.idle_at > now;
            if !keep {
                freed += Self::cost(key, entry);
            }
            keep
        });
        self.bytes -= freed;
        self.next_sweep = now + SWEEP_EVERY_MS;
    }

    fn maintain(&mut self, now: i64) {
        if now >= self.next_sweep {
            self.sweep(now);
        }
    }

    /// Runs `f` on the entry of `key` if there is one, keeping the byte
    /// count true.
    fn update<R>(&mut self, key: &str, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        let entry = self.map.get_mut(key)?;
        let before = entry.bytes;
        let result = f(entry);
        self.bytes = self.bytes - before + entry.bytes;
        Some(result)
    }

    /// Makes sure every key of `keys` has an entry, all or none: refused
    /// at the bound (after a sweep, if the last was long enough ago).
    fn admit(&mut self, keys: &[&str], bounds: &Bounds, now: i64) -> Result<(), StoreError> {
        let missing: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| !self.map.contains_key(*k))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let bytes: usize = missing.iter().map(|k| ENTRY_COST + k.len()).sum();
        let fits = |s: &Self| {
            s.map.len() + missing.len() <= bounds.entries && s.bytes + bytes <= bounds.bytes
        };
        if !fits(self) && now - self.last_full_sweep >= SWEEP_WHEN_FULL_MS {
            self.last_full_sweep = now;
            self.sweep(now);
        }
        if !fits(self) {
            return Err(StoreError::Unavailable {
                dependency: "rate_limiter",
                kind: crate::resilience::failure::FailureKind::QueueFull,
                reason: "the in-process rate limiter is at its memory bound".into(),
            });
        }
        for key in missing {
            self.map.insert(key.to_string(), Entry::default());
        }
        self.bytes += bytes;
        Ok(())
    }
}

/// One shard's share of the bounds.
struct Bounds {
    entries: usize,
    bytes: usize,
}

pub struct MemoryLimiter {
    shards: Vec<Mutex<Shard>>,
    bounds: Bounds,
    /// Random per process: nobody can aim all their keys at one shard.
    hasher: RandomState,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self::new()
    }
}

/// The keys of one login subject, all in the shard of its account (as in
/// Redis, where they share a hash tag).
fn login_keys(s: LoginSubject<'_>) -> (String, String, String) {
    (
        format!("pair:{}\u{0}{}", s.account, s.address),
        format!("all:{}", s.account),
        format!("known:{}", s.account),
    )
}

impl MemoryLimiter {
    pub fn new() -> Self {
        Self::bounded(SHARDS, MAX_ENTRIES, MAX_BYTES)
    }

    fn bounded(shards: usize, entries: usize, bytes: usize) -> Self {
        let shards = shards.max(1);
        Self {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        bytes: 0,
                        next_sweep: 0,
                        last_full_sweep: i64::MIN / 2,
                    })
                })
                .collect(),
            bounds: Bounds {
                entries: (entries / shards).max(1),
                bytes: bytes / shards,
            },
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, tag: &str) -> &Mutex<Shard> {
        let at = self.hasher.hash_one(tag) as usize % self.shards.len();
        &self.shards[at]
    }

    /// `LimiterStore::reserve`, synchronously (no I/O behind it).
    pub fn reserve_now(
        &self,
        key: &str,
        window: Window,
        member: &str,
        now: i64,
    ) -> Result<LimitDecision, StoreError> {
        let mut shard = self.shard(key).lock();
        shard.maintain(now);
        if let Some(Some(refused)) = shard.update(key, |e| e.refusal(window, now)) {
            return Ok(refused);
        }
        shard.admit(&[key], &self.bounds, now)?;
        shard
            .update(key, |e| e.take(window, member, now))
            .ok_or_else(|| StoreError::Corrupt("limiter entry vanished".into()))
    }

    /// Gives back a slot taken by `reserve_now`.
    pub fn refund_now(&self, key: &str, member: &str) {
        self.shard(key).lock().update(key, |e| e.give_back(member));
    }

    /// Keys held and their approximate bytes, all shards together.
    pub fn usage(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(n, b), shard| {
            let shard = shard.lock();
            (n + shard.map.len(), b + shard.bytes)
        })
    }
}

#[async_trait]
impl LimiterStore for MemoryLimiter {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn reserve(
        &self,
        key: &str,
        window: Window,
        member: &str,
        now_ms: i64,
    ) -> Result<LimitDecision, StoreError> {
        self.reserve_now(key, window, member, now_ms)
    }

    async fn reserve_login(
        &self,
        subject: LoginSubject<'_>,
        w: AccountWindows,
        member: &str,
        now: i64,
    ) -> Result<LimitDecision, StoreError> {
        let (pair, all, known) = login_keys(subject);
        let mut shard = self.shard(subject.account).lock();
        shard.maintain(now);
        if let Some(Some(refused)) = shard.update(&pair, |e| e.refusal(w.pair, now)) {
            return Ok(refused);
        }
        let since = now - ms(w.known_for);
        let exempt = shard
            .map
            .get(&known)
            .is_some_and(|e| e.knows(subject.address, since));
        if !exempt {
            if let Some(Some(mut refused)) = shard.update(&all, |e| e.refusal(w.ceiling, now)) {
                refused.reset_after = refused.reset_after.min(w.lockout_max);
                return Ok(refused);
            }
            shard.admit(&[&pair, &all], &self.bounds, now)?;
            shard.update(&all, |e| e.take(w.ceiling, member, now));
        } else {
            shard.admit(&[&pair], &self.bounds, now)?;
        }
        shard
            .update(&pair, |e| e.take(w.pair, member, now))
            .ok_or_else(|| StoreError::Corrupt("limiter entry vanished".into()))
    }

    async fn refund_login(
        &self,
        subject: LoginSubject<'_>,
        w: AccountWindows,
        member: &str,
        succeeded: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        let (pair, all, known) = login_keys(subject);
        let mut shard = self.shard(subject.account).lock();
        shard.update(&pair, |e| {
            e.give_back(member);
            if succeeded {
                e.strikes = 0;
            }
        });
        shard.update(&all, |e| e.give_back(member));
        if succeeded {
            shard.admit(&[&known], &self.bounds, now)?;
            shard.update(&known, |e| e.remember(subject.address, w.known_for, now));
        }
        Ok(())
    }

    async fn fail_login(
        &self,
        subject: LoginSubject<'_>,
        w: AccountWindows,
        now: i64,
    ) -> Result<Option<Duration>, StoreError> {
        let (pair, _, _) = login_keys(subject);
        let mut shard = self.shard(subject.account).lock();
        Ok(shard
            .update(&pair, |e| e.fail(w.pair, w.lockout_max, now))
            .flatten())
    }
}

#[cfg(test)]
#[path = "memory_limiter_tests.rs"]
mod tests;
